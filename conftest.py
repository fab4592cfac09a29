"""Repository-wide pytest set-up (also applies to notebooks run with --nbval)."""

import os

# Notebook training takes seconds under pytest unless the user chose a profile explicitly.
os.environ.setdefault("UNETLIB_PROFILE", "smoke")
