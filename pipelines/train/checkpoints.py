"""Where a train step keeps its epoch checkpoints, and which one ``resume_from`` means.

Each epoch the Trainer saves ``checkpoint-<step>/`` (weights, optimizer, scheduler, RNG states, its
state) with our epoch records, in the step's output folder; the run is tagged with that folder.
``resume_from`` is that folder, one checkpoint in it, or the run's id (its folder, else the
checkpoints logged to the run with ``log_checkpoints``). A distilling step (``distill_layers``) keeps
the finished teacher in ``teacher/`` and the student's checkpoints in ``student/``: those come first.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.config import ConfigError
from pipelines.train.callbacks import ARTIFACT_PATH, RECORDS_FILE
from pipelines.train.distill import STUDENT_DIR, TEACHER_DIR, TEACHER_RECORD, teacher_complete

FOLDER_TAG = "checkpoint_dir"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_checkpoint(folder: Path) -> bool:
    """Complete: the Trainer's state and then our epoch records (written last, by EpochRecords.on_save)."""
    return (folder / "trainer_state.json").is_file() and (folder / RECORDS_FILE).is_file()


def last_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``folder`` (a half-written one is skipped).

    A distilling step's folder also holds the finished teacher and ``student/``: once the teacher is complete,
    the student's last checkpoint is the one to resume, else the teacher has to finish and ``folder``'s counts.
    """
    student = folder / STUDENT_DIR
    if teacher_complete(folder) and student.is_dir() and (found := _last_in(student)) is not None:
        return found
    return _last_in(folder)


def _last_in(folder: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))
             and is_checkpoint(p)]
    return max(found)[1] if found else None


def resolve(resume_from: str, download_dir: Path | None = None) -> Path:
    """The checkpoint folder to resume from, or a ConfigError naming ``resume_from``.

    A checkpoint logged to the run (not on this machine) is downloaded into ``download_dir`` (default: a new
    temporary folder); the train step passes its own checkpoints folder, which goes once training succeeded.
    """
    path = Path(resume_from).expanduser()
    if path.is_dir():
        found = path if is_checkpoint(path) else last_checkpoint(path)
        if found is None:
            raise ConfigError(f"parameter resume_from: {path} holds no complete checkpoint (checkpoint-N/ with "
                              f"trainer_state.json and {RECORDS_FILE})")
        return found
    client = MlflowClient()
    try:
        run = client.get_run(resume_from)
    except MlflowException:
        raise ConfigError(f"parameter resume_from: {resume_from!r} is neither a checkpoint folder nor an MLflow "
                          f"run id of this tracking server") from None
    folder = run.data.tags.get(FOLDER_TAG, "")
    if folder and (found := last_checkpoint(Path(folder))) is not None:
        return found
    run_id = run.info.run_id
    teacher = f"{ARTIFACT_PATH}/{TEACHER_DIR}"
    stages = [ARTIFACT_PATH]  # a distilling run: the student's, once its teacher was uploaded whole
    if any(Path(f.path).name == TEACHER_RECORD for f in client.list_artifacts(run_id, teacher)):
        stages.insert(0, f"{ARTIFACT_PATH}/{STUDENT_DIR}")
    for stage in stages:
        logged = sorted(((int(m.group(1)), a.path) for a in client.list_artifacts(run_id, stage)
                         if (m := _CHECKPOINT.match(Path(a.path).name))), reverse=True)
        for _, path in logged:  # the newest whose upload finished (its records are uploaded last)
            if any(Path(f.path).name == RECORDS_FILE for f in client.list_artifacts(run_id, path)):
                target = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="resume-"))
                target.mkdir(parents=True, exist_ok=True)
                print(f"resume_from: downloading {path} of run {resume_from}", flush=True)
                if stage != ARTIFACT_PATH:  # the student resumes beside its teacher, as in the step's own folder
                    client.download_artifacts(run_id, teacher, str(target))  # target/teacher
                    target = target / STUDENT_DIR
                    target.mkdir(exist_ok=True)
                found = Path(client.download_artifacts(run_id, path, str(target)))
                assert stage == ARTIFACT_PATH or teacher_complete(found.parent.parent), found
                return found
    raise ConfigError(f"parameter resume_from: run {resume_from} left no checkpoint (its folder "
                      f"{folder or '(untagged)'} has none and none was logged; set log_checkpoints to log them)")
