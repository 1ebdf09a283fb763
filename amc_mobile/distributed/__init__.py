"""Scale-out on Ray (optional extra ``amc-mobile[ray]``): device hosts, farm, sharded tables, parallel evaluation.

- :mod:`.cluster`: connecting (``HOST:PORT`` or ``local``), the resources a device host advertises
  (``device:NAME``, ``model:MODEL``) and the devices the cluster offers.
- :mod:`.worker`: ``amc-bench worker``, one Ray node per host advertising the phones it can reach.
- :mod:`.farm`: a :data:`amc_mobile.farm.run.Mapper` that runs each farm device on the host that has it.
- :mod:`.profile`: a latency table's grid split over every device of one model, rows streamed back.
- :mod:`.pool`: a ``map_fn`` that evaluates independent candidates on Ray workers.

Nothing here imports Ray at module import time: without the extra, everything else works as before.
"""
