"""Knowledge-distillation loss, DDC eq. 12 (papers/004): L = lambda * L_soft + (1 - lambda) * L_hard.

DDC writes L_soft as a KL divergence between the student's and the teacher's outputs (eq. 13) and
L_hard as the cross-entropy with the true labels (eq. 14); lambda = 0.7. We use Hinton et al.'s
form of the soft term (DDC's reference [14]): KL(softmax(teacher / T) || softmax(student / T)) * T^2,
so its gradient scale does not depend on the temperature T (T = 1 gives the plain KL of eq. 13).
"""

from __future__ import annotations

import torch
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            lam: float = 0.7, temperature: float = 4.0) -> torch.Tensor:
    """lam * T^2 * KL(p_teacher^T || p_student^T) + (1 - lam) * CE(student, labels), batch mean."""
    t = float(temperature)
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                                nn.functional.log_softmax(teacher_logits / t, dim=1),
                                reduction="batchmean", log_target=True) * (t * t)
    hard = nn.functional.cross_entropy(student_logits, labels)
    return lam * soft + (1.0 - lam) * hard
