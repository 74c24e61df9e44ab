import sys

from orchestration.cli.app import main

sys.exit(main())
