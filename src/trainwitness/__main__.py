import sys

from trainwitness.cli import main

sys.exit(main())
