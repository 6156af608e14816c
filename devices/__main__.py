"""`python -m devices factory ...`: the simulators without the `fogline` command around them."""

import sys

from devices.cli import main

sys.exit(main())
