import sys

from mgm_studies.cli import main

sys.exit(main())
