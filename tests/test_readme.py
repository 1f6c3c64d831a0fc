"""The README's Python example runs as written (every ```python block, in order)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    # the quick example's own claims: depth 3 recovers the rank-5 matrix from 2000 entries
    assert namespace["result"].status == "converged"
    assert float(namespace["error"]) < 1e-3
