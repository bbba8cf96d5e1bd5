"""``import textbatch`` loads neither torch nor transformers until a name needs them."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import textbatch
assert "torch" not in sys.modules, "import textbatch loaded torch"
assert "transformers" not in sys.modules, "import textbatch loaded transformers"
textbatch.PaddingCollator  # a name that needs torch loads it on first use
assert "torch" in sys.modules
print("ok")
"""


def test_import_textbatch_is_lazy():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
