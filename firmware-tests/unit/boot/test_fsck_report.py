"""The boot's filesystem-check report: what fsck's output says, one line per filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.boot.fsck_report import Outcome, classify, main

LOGSAVE_HEAD = "Log of fsck -C -y -T -t ext4 /dev/vda2 \nFri Dec  4 11:00:00 2026\n\n"
LOGSAVE_TAIL = "\nFri Dec  4 11:00:01 2026\n----------------\n"
CLEAN = LOGSAVE_HEAD + "RASPIROOT: clean, 41234/131072 files, 301234/524288 blocks\n" + LOGSAVE_TAIL
JOURNAL = (LOGSAVE_HEAD + "RASPIROOT: recovering journal\n"
           "RASPIROOT: clean, 41240/131072 files, 301300/524288 blocks\n" + LOGSAVE_TAIL)
REPAIRED = (LOGSAVE_HEAD + "RASPIROOT: recovering journal\nPass 1: Checking inodes, blocks, "
            "and sizes\nInode 1234 extent tree (at level 1) could be shorter.  Optimize? yes\n"
            "Pass 5: Checking group summary information\nFree blocks count wrong (1, counted=2)."
            "\nFix? yes\n\nRASPIROOT: ***** FILE SYSTEM WAS MODIFIED *****\n"
            "RASPIROOT: 41240/131072 files (0.2% non-contiguous), 301300/524288 blocks\n"
            + LOGSAVE_TAIL)
FAILED = (LOGSAVE_HEAD + "RASPIROOT contains a file system with errors, check forced.\n"
          "RASPIROOT: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n" + LOGSAVE_TAIL)
FAT_CLEAN = "fsck.fat 4.2 (2021-01-31)\n/dev/vda1: 42 files, 12345/65501 clusters\n"
FAT_DIRTY = ("fsck.fat 4.2 (2021-01-31)\nThere are differences between boot sector and its "
             "backup.\nDirty bit is set. Fs was not properly unmounted and some data may be "
             "corrupt.\n Automatically removing dirty bit.\n/dev/vda1: 42 files, "
             "12345/65501 clusters\n")
FAT_FIXED = ("fsck.fat 4.2 (2021-01-31)\nFree cluster summary wrong (53000 vs. really 53156)"
             "\n  Auto-correcting.\nPerforming changes.\n/dev/vda1: 42 files, 12345/65501 "
             "clusters\n")


@pytest.mark.parametrize(("text", "outcome", "detail"), [
    (CLEAN, Outcome.CLEAN, "RASPIROOT: clean, 41234/131072 files, 301234/524288 blocks"),
    (JOURNAL, Outcome.RECOVERED, "RASPIROOT: clean, 41240/131072 files, 301300/524288 blocks"),
    (REPAIRED, Outcome.REPAIRED, "Free blocks count wrong (1, counted=2)."),
    (FAILED, Outcome.FAILED, "RASPIROOT: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY."),
    (FAT_CLEAN, Outcome.CLEAN, "/dev/vda1: 42 files, 12345/65501 clusters"),
    (FAT_DIRTY, Outcome.RECOVERED, "/dev/vda1: 42 files, 12345/65501 clusters"),
    (FAT_FIXED, Outcome.REPAIRED, "Free cluster summary wrong (53000 vs. really 53156)"),
    ("", Outcome.FAILED, "no check ran this boot"),
    ("Log of fsck\n(killed)\n", Outcome.FAILED, "no result in its output: (killed)"),
])
def test_classify(text: str, outcome: Outcome, detail: str) -> None:
    check = classify("root filesystem", text)
    assert (check.outcome, check.detail) == (outcome, detail)


def run(tmp_path: Path, root: str | None, boot: str | None,
        capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    paths = []
    for name, text in (("fsck.log", root), ("boot.log", boot)):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        paths.append(str(path))
    code = main(paths)
    return code, capsys.readouterr().out.splitlines()


def test_main_clean_boot_prints_both_and_exits_0(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(tmp_path, JOURNAL, FAT_DIRTY, capsys)
    assert code == 0
    assert lines == ["root filesystem: clean after an unclean shutdown (RASPIROOT: clean, "
                     "41240/131072 files, 301300/524288 blocks)",
                     "boot partition: clean after an unclean shutdown (/dev/vda1: 42 files, "
                     "12345/65501 clusters)"]


def test_main_repair_exits_1_and_a_missing_check_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(tmp_path, REPAIRED, FAT_CLEAN, capsys)
    assert code == 1 and lines[0].startswith("root filesystem: REPAIRED (")
    # The symptom: an initramfs without fsck leaves no log at all.
    (tmp_path / "again").mkdir()
    code, lines = run(tmp_path / "again", None, FAT_CLEAN, capsys)
    assert code == 2 and lines[0] == "root filesystem: NOT CLEAN (no check ran this boot)"


def test_main_reports_the_data_partition_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The A/B layout's data partition (systemd-fsck@ like boot) gets its own line."""
    logs = {"root": CLEAN, "boot": FAT_CLEAN,
            "data": CLEAN.replace("RASPIROOT", "HEARTHDATA")}
    for name, text in logs.items():
        (tmp_path / name).write_text(text)
    assert main([str(tmp_path / n) for n in logs]) == 0
    assert "data partition: clean (HEARTHDATA: clean, " in capsys.readouterr().out
    (tmp_path / "data").write_text("")
    assert main([str(tmp_path / n) for n in logs]) == 2  # its check did not run
