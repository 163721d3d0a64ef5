"""The calc-mq benchmark (issue 4): `python bench/run.py --help`.

Everything here is measurement code; nothing in calcmq/ imports it. The load
generators (load.py, ceiling.py, baseline/client.py) run as their own
processes so their CPU is accounted like every other process's and the
orchestrator (run.py) never competes with them for the GIL.
"""
