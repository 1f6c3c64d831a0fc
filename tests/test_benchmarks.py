"""The benchmark scripts still run: each in its ``--quick`` mode (small sizes, printed only,
BENCHMARKS.md untouched). Nothing here asserts a time."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _run_quick(script: str) -> str:
    before = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else None
    p = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    after = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else None
    assert after == before  # --quick prints only
    return p.stdout


def test_bench_nuclear_quick():
    out = _run_quick("bench_nuclear.py")
    # one matched row: SCS's violation, then the native solver's, which must be at most SCS's
    line = next(ln for ln in out.splitlines() if ln.startswith("n=30"))
    scs_viol = float(line.split("viol ")[1].split(";")[0])
    admm_viol = float(line.split("viol ")[2].split(" ")[0])
    assert admm_viol <= scs_viol


def test_bench_flow_quick():
    out = _run_quick("bench_flow.py")
    assert "| 2x2 completion" in out and "| tsit5 |" in out and "| GD |" in out


def test_bench_scale_quick():
    out = _run_quick("bench_scale.py")
    assert out.count("us/step") + out.count("ms/step") == 1


def test_bench_peer_quick():
    """The peer (PyTorch eager) and deeplinear train the same problem: equal losses after three
    steps from the same factors, in both dtypes."""
    out = _run_quick("bench_peer.py")
    rows = [ln for ln in out.splitlines() if ln.startswith("| 2x2") or ln.startswith("| 100x100")]
    assert len(rows) == 4 and "| float32 |" in rows[0] and "| float64 |" in rows[-1]
    tol = {"float32": 1e-4, "float64": 1e-10}
    for row in rows:
        dtype, gap = row.split(" | ")[1], float(row.rstrip(" |").split(" | ")[-1])
        assert gap <= tol[dtype], row


def test_bench_cnn_quick():
    out = _run_quick("bench_cnn.py")
    assert "| jax (patch products) |" in out and "| torch |" in out


def test_bench_gemm_quick():
    """Every library's product at n = 64, deeplinear's BLAS kernel among them where built."""
    from deeplinear import _native

    out = _run_quick("bench_gemm.py")
    assert "| 64 | float64 |" in out and "| 64 | float32 |" in out and "scipy ?gemm" in out
    assert ("deeplinear gemm a^T @ b" in out) == _native.gemm_available()
