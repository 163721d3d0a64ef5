# PYTHON_ARGCOMPLETE_OK
"""The calc-mq command-line client: `python calculator_client.py --help`."""

import sys

from calcmq.client import main

if __name__ == "__main__":
    sys.exit(main())
