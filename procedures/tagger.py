"""``nlp-train tagger``: a NeuralTagger student trained on gold labels (``train_student``)."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from nlp_distill.config import StudentDataConfig, StudentTrainerConfig, TaggerConfig, TrainerConfig
from nlp_distill.modules.pretrained import resolve_word_vectors
from nlp_distill.training.student import train_student
from procedures.common import RunOptions, run_on_data, setup_logging

def student_configs(tagger: TaggerConfig, data: StudentDataConfig) -> Tuple[TaggerConfig, StudentDataConfig]:
    """The run's student settings with the vectors file and word size resolved
    (``resolve_word_vectors``), so ``config.json`` records what was used; its warning (no
    packaged GloVe) reaches the console before the run folder's log starts."""
    setup_logging()
    return resolve_word_vectors(tagger, data)


def do_training(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
                trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
                run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Train a student on the gold labels of ``data_dir`` (no teacher)."""
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer, "data": data}
    return run_on_data(data_dir, output_dir, sections, run, train_student, tagger=tagger, trainer=trainer, data=data)
