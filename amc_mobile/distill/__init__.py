"""Knowledge distillation (DDC sec. 3.5): KD loss and a resumable fine-tuning loop."""

from amc_mobile.distill.finetune import FinetuneConfig, finetune
from amc_mobile.distill.loss import kd_loss
from amc_mobile.distill.run import finetune_checkpoint

__all__ = ["FinetuneConfig", "finetune", "finetune_checkpoint", "kd_loss"]
