import sys

from mptcplab.cli import main

sys.exit(main())
