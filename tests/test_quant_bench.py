"""bench/quant.py and examples/quantize_ptq.py run end to end in their reduced forms
(a tiny run, one validation batch, a few fine-tuning steps)."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_quant", ROOT / "bench" / "quant.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quant_bench_quick_table(tmp_path):
    bench = _bench_module()
    md = tmp_path / "table.md"
    rows = bench.main(["--quick", "--md", str(md)])
    by_key = {r["key"]: r for r in rows}
    assert list(by_key) == [key for key, _, _ in bench.ROWS]
    assert all(math.isfinite(r["ppl"]) and r["ppl"] > 1 for r in rows)
    assert by_key["float"]["delta_pct"] == 0.0 and by_key["float"]["bits_per_weight"] == 32.0
    # storage: scales included, so a little above the nominal width; int4 < int8 < float
    assert 4 < by_key["int4"]["bits_per_weight"] < 8 < by_key["int8"]["bits_per_weight"] < 9
    assert by_key["int4"]["bits_per_weight"] == 4.5  # d_model 64: one float32 scale per 64
    assert by_key["gptq4"]["bits_per_weight"] == by_key["int4"]["bits_per_weight"]
    assert by_key["int8"]["file_bytes"] < by_key["float"]["file_bytes"]
    for key in ("ptq4", "qat4", "prune"):
        assert "vs float32 + fine-tune" in by_key[key]["note"]
    assert "outlier columns" in by_key["llmint8"]["note"]
    text = md.read_text()
    assert "| GPTQ int4, group 64 |" in text and "| int4 RTN, group 64 |" in text


def test_quantize_ptq_example_reduced():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quantize_ptq.py"),
                          "--steps", "3", "--eval-batches", "1"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in ("float32", "int8", "int4 g64", "W8A8 per-token", "LLM.int8"):
        assert f"\n{name} " in out.stdout
    assert "outlier input columns" in out.stdout
