"""mkdocs hook: fills the CLI reference page from the commands themselves."""

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown, page, **kwargs):
    if MARKER not in markdown:
        return markdown
    from phonemekit.cli.reference import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
