"""DDC's own method (Pahwa et al., papers/004): a Bi-LSTM REINFORCE policy that removes whole
layers/blocks (:mod:`.units` finds them from the graph), students trained by KD, reward R1*R2*R3,
then optionally AMC's channel search (``ddc+amc``). Entry point: :func:`run_ddc_search`."""

from amc_mobile.search.ddc.agent import BiLSTMPolicy, PolicyConfig, ReinforceAgent
from amc_mobile.search.ddc.search import (
    DDCConfig,
    DDCInputs,
    evaluate_student,
    evaluate_students,
    run_ddc_search,
)
from amc_mobile.search.ddc.units import (
    TrunkElement,
    apply_removal,
    removable_units,
    remove_units,
    trunk_elements,
)

__all__ = [
    "BiLSTMPolicy", "DDCConfig", "DDCInputs", "PolicyConfig", "ReinforceAgent", "TrunkElement", "apply_removal",
    "evaluate_student", "evaluate_students", "remove_units", "removable_units", "run_ddc_search", "trunk_elements",
]
