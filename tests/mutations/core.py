"""Planted bugs in the autograd engine and in gradcheck itself."""

from tests.mutations import Mutation

MUTATIONS = [
    Mutation(
        name="autograd: a tensor used twice keeps only the last gradient",
        file="minilm/autograd.py",
        old="slot[nr] = g if slot[nr] is None else slot[nr] + g",
        new="slot[nr] = g",
        tests=["tests/test_autograd.py", "tests/test_math_ops.py"],
    ),
    Mutation(
        name="autograd: a node runs before every gradient for it has arrived",
        file="minilm/autograd.py",
        old="            if deps[child] == 0:\n",
        new="            if deps[child] <= 1:\n",
        tests=["tests/test_autograd.py"],
    ),
    Mutation(
        name="autograd: retain_graph ignored (saved arrays always freed)",
        file="minilm/autograd.py",
        old="            if not retain_graph:\n                node.release()",
        new="            if True:\n                node.release()",
        tests=["tests/test_autograd.py"],
    ),
    Mutation(
        name="gradcheck: one-sided difference (off by O(eps))",
        file="minilm/finite_diff.py",
        old="flat[k] = (fp - fm) / (2 * eps)",
        new="flat[k] = (fp - projected(list(inputs))) / eps",
        tests=["tests/test_math_ops.py"],
    ),
    Mutation(
        name="exp backward off by one part in 1e5 (passed the old atol 1e-5/rtol 1e-3 gradcheck)",
        file="minilm/functional/unary.py",
        old="""        (y,) = ctx.saved
        return g * y
""",
        new="""        (y,) = ctx.saved
        return g * y * (1 + 1e-5)
""",
        tests=["tests/test_math_ops.py"],
    ),
]
