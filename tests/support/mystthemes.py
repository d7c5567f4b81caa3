"""A MyST site theme for offline tests, named as MyST's own are (article-theme, book-theme).

MyST downloads its real themes from the internet; tests give the service this one instead.
"""

from __future__ import annotations

from pathlib import Path

# A MyST site template that renders itself (template.yml `build.render`: MyST serves the built
# pages as JSON at $CONTENT_CDN and runs the command, which writes $BUILD_DIRECTORY): what the
# real article-theme and book-theme do with a web server, in 100 lines of Python. Each page
# says which theme drew it; images are copied into the site, HTML outputs kept as HTML, a
# plotly figure becomes the div plotly.js draws into (with its traces' names).
THEME_RENDER = """\
import html, json, os, urllib.request
from pathlib import Path

cdn, out = os.environ["CONTENT_CDN"], Path(os.environ["BUILD_DIRECTORY"])


def get(path, raw=False):
    with urllib.request.urlopen(f"{cdn}/{path.lstrip('/')}") as response:
        return response.read() if raw else json.load(response)


def image(path):
    # an output's image, as MyST's content server serves it, copied into the site's build/
    (out / "build").mkdir(exist_ok=True)
    (out / "build" / Path(path).name).write_bytes(get(path, raw=True))
    return f'<img src="build/{html.escape(Path(path).name)}">'


def content(bundle):
    if "content" in bundle:
        return bundle["content"]
    return get(bundle["path"], raw=True).decode()


def plotly(bundle):
    figure = json.loads(content(bundle))
    names = [t.get("name", "") for t in figure.get("data", [])]
    return (f'<div class="plotly-graph-div" data-traces="{len(names)}">'
            f"{html.escape(', '.join(names))}</div>")


def parts(node):
    if isinstance(node, dict):
        if isinstance(node.get("value"), str):
            yield f"<p>{html.escape(node['value'])}</p>"
        output = node.get("jupyter_data") or {}
        if isinstance(output.get("text"), str):
            yield f"<p>{html.escape(output['text'])}</p>"
        data = output.get("data") or {}
        if "image/png" in data:
            yield image(data["image/png"]["path"])
        elif "application/vnd.plotly.v1+json" in data:
            yield plotly(data["application/vnd.plotly.v1+json"])
        elif "text/html" in data:  # as themes show HTML outputs: as HTML
            yield content(data["text/html"])
        for value in node.values():
            yield from parts(value)
    elif isinstance(node, list):
        for value in node:
            yield from parts(value)


def front(project, page):
    # the project's metadata (myst.yml's project:) heads every page, as the themes show it
    matter = page.get("frontmatter") or {}
    names = [a.get("name", "") if isinstance(a, dict) else str(a)
             for a in matter.get("authors") or []]
    places = [a.get("name", "") for a in project.get("affiliations") or []]
    return (f'<meta name="theme" content="{THEME}">\\n'
            f'<p class="project">{html.escape(str(project.get("title", "")))}</p>\\n'
            f'<p class="authors">{html.escape(", ".join(names))}</p>\\n'
            f'<p class="affiliations">{html.escape("; ".join(places))}</p>\\n'
            f'<h1 class="title">{html.escape(str(matter.get("title", "")))}</h1>\\n')


for project in get("config.json")["projects"]:
    for slug in [project["index"], *(p["slug"] for p in project["pages"] if "slug" in p)]:
        page = get(f"content/{slug}.json")
        body = "\\n".join(parts(page["mdast"]))
        name = "index.html" if slug == project["index"] else f"{slug}.html"
        (out / name).write_text(f"<!doctype html><title>{slug}</title>\\n"
                                f"{front(project, page)}{body}\\n")
"""


def site_theme(name: str) -> dict[str, str]:
    """A site template's files, named `name` (as MyST's own are: article-theme, book-theme)."""
    return {
        "template.yml": f"myst: v1\nkind: site\ntitle: {name} (tests)\n"
        "build:\n  render: python render.py\n",
        "render.py": f"THEME = {name!r}\n{THEME_RENDER}",
    }


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
