"""A MkDocs hook: README.md's and benchmarks/README.md's relative links must name files that exist.

Those files are read on GitHub, outside the site, so MkDocs' own link validation never sees
them; a warning here fails `mkdocs build --strict` as a broken link in a page does.
"""

import logging
import pathlib
import re

_LOG = logging.getLogger("mkdocs.hooks.readme_links")
_FILES = ("README.md", "benchmarks/README.md")
# Inline Markdown links and images: [text](target) or ![alt](target).
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(root):
    """(file, target) of every relative link in _FILES whose file is missing or outside `root`."""
    root = pathlib.Path(root).resolve()
    broken = []
    for name in _FILES:
        path = root / name
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor of the same file
            resolved = (path.parent / target.split("#")[0]).resolve()
            if not resolved.exists() or root not in (resolved, *resolved.parents):
                broken.append((name, target))
    return broken


def on_pre_build(config, **kwargs):
    root = pathlib.Path(config.config_file_path).parent
    for name, target in broken_links(root):
        _LOG.warning("%s links to '%s', which is not a file of the repository", name, target)
