"""``amc-mobile finetune`` as one library call: open a pruned student and its teacher, match their
classes (a class-subset search's student gets the teacher cut to its classes), open the teacher's
data and run the KD fine-tune (:func:`amc_mobile.distill.finetune`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from amc_mobile.distill.finetune import FinetuneConfig, finetune
from amc_mobile.errors import UserError


def finetune_checkpoint(checkpoint: str, teacher: str, out: str | Path, cfg: FinetuneConfig, *,
                        data_dir: str | None = None, classes: str | None = None, test: bool = False,
                        resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
                        command: str | None = None) -> dict[str, Any]:
    """Distil ``teacher`` into the student saved at ``checkpoint``; metrics as :func:`finetune` returns.

    ``classes`` cuts the teacher's logits to a class subset; by default the student's recorded classes
    are used when they are a subset of the teacher's (the ``pruned.pt`` of a ``--classes`` search).
    """
    from amc_mobile.data import teacher_data
    from amc_mobile.models.arch import require_arch
    from amc_mobile.models.checkpoint import load_checkpoint
    from amc_mobile.search.subset import subset_teacher, teacher_classes

    student, meta = load_checkpoint(checkpoint)
    teacher_model, tmeta = load_checkpoint(teacher)
    student_classes = (meta.get("data") or {}).get("classes")
    chosen: str | list[str] | None = classes
    if chosen is None and student_classes and tmeta.get("data"):
        t_names = teacher_classes(tmeta, data_dir)
        if list(student_classes) != t_names and set(student_classes) <= set(t_names):
            chosen = [str(t_names.index(c)) for c in student_classes]  # a subset search's pruned.pt
    if chosen:
        teacher_model, tmeta, names = subset_teacher(teacher_model, tmeta, chosen, data_dir)
        if student_classes and len(student_classes) == len(names) and list(student_classes) != names:
            raise UserError(f"{checkpoint} was searched/trained for classes {', '.join(student_classes)}, not "
                            f"{', '.join(names)} (same classes in the same order are needed)")
        meta = {**meta, "data": {**(meta.get("data") or tmeta["data"]), "classes": names}}
    n_student, n_teacher = require_arch(student).num_classes, require_arch(teacher_model).num_classes
    if n_student != n_teacher:
        raise UserError(f"the student has {n_student} outputs but the teacher has {n_teacher}; pass --classes "
                        "to cut the teacher to the student's classes")
    info = meta.get("data") or tmeta.get("data") or {}
    if not info.get("dataset"):
        raise UserError(f"{checkpoint} does not record its data set")
    data_meta = {**meta, "data": info}
    return finetune(student, teacher_model, teacher_data(data_meta, "train", data_dir),
                    teacher_data(data_meta, "val", data_dir), out, cfg,
                    test_data=teacher_data(data_meta, "test", data_dir) if test else None, resume=resume,
                    progress=progress, log=log, command=command)
