"""``python -m nst_jax.cli``: the nst-jax command."""

import sys

from nst_jax.cli import main

sys.exit(main())
