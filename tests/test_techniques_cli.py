"""`minilm techniques`: the index of docs/techniques.md printed by subsystem, and a
bad --subsystem refused in one line naming the known ones."""

from minilm.cli import main as cli


def test_techniques_command_prints_the_index_and_filters(capsys):
    assert cli(["techniques"]) == 0
    out = capsys.readouterr().out
    assert "Autograd and ops" in out and "Parallel and distributed" in out
    assert cli(["techniques", "--subsystem", "parallel"]) == 0
    only = capsys.readouterr().out
    assert only.splitlines()[0] == "Parallel and distributed"
    assert "Autograd and ops" not in only and len(only) < len(out)
    assert cli(["techniques", "--subsystem", "no such"]) == 2
    err = capsys.readouterr().err
    assert "no subsystem matches 'no such'" in err and "Autograd and ops" in err
