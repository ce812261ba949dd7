"""A local TrueType font, so rendering (galleries, demo corpus, ablation scenes) and PaddleOCR never
fetch one. Here, beside the image contract, because pipeline/, annotators/ and trainer/ all draw text."""
from __future__ import annotations

import os
from pathlib import Path

_SYSTEM = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
           "/usr/share/fonts/TTF/DejaVuSans.ttf")


def find_font(bold: bool = False) -> Path:
    """DejaVu Sans from the system (Debian fonts-dejavu-core) or from matplotlib's wheel."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    override = os.environ.get("MOAI_FONT")
    candidates = [override] if override else []
    candidates += [p.replace("DejaVuSans.ttf", name) for p in _SYSTEM]
    try:
        import matplotlib
        candidates.append(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"no local TrueType font found (tried {candidates}); "
                            "install fonts-dejavu-core or matplotlib, or set MOAI_FONT")
