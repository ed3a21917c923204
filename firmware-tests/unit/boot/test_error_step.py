"""Before supervisord, a refused hearth.toml or a repaired disk is shown on the OLED as an
error page by `appliance display step --error` (hearth-firstboot, hearth-fsck-report)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from appliance import cli
from appliance.config import dump_toml
from appliance.devices.pages import ErrorPage, render


def test_error_step_draws_the_error_page_and_leaves_it(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    cfg = tmp_path / "hearth.toml"
    cfg.write_text(dump_toml({"hearth": {"network": "regtest"},
                              "display": {"simulate": True, "frames_dir": frames}}))
    detail = "node.dbcache_mib: expected int, got 'lots'"
    assert cli.main(["display", "step", "hearth.toml refused", "--error", "--detail", detail,
                     "--config", str(cfg)]) == 0
    (saved,) = sorted(frames.glob("frame-*.png"))
    expected = render(ErrorPage("hearth.toml refused", detail))
    assert Image.open(saved).convert("1").tobytes() == expected.tobytes()
