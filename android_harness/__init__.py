"""Everything that talks to an Android phone over adb: transport, device facts, the ``benchmark_model``
runner and its output parser, batch mode for latency tables, and a loopback ADB stand-in for tests.
"""
