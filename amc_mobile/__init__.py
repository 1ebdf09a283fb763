"""amc-mobile: automated, latency-aware compression of CNNs for phones and GPUs.

AMC (He et al., ECCV 2018) searches per-layer channel-keep ratios with a DDPG agent; DDC
(Pahwa et al.) rewards measured inference time. This package implements both on real runtimes.
"""

__version__ = "0.1.0"
