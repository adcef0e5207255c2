"""The demos save their curves (and XOR's decision boundary) as a PNG when asked."""
import pytest

from chainrule import demos


def test_xor_demo_saves_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "xor.png"
    parser = demos.build_parser("xor")
    options = vars(parser.parse_args(["--epochs", "200", "--plot", str(out)]))
    assert demos.run_demo("xor", options, out=open(tmp_path / "log.txt", "w")) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_gradient_check_has_no_plot_option():
    with pytest.raises(SystemExit):
        demos.build_parser("gradient_check").parse_args(["--plot", "x.png"])
