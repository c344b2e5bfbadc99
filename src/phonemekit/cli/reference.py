"""The CLI reference as Markdown, generated from the commands themselves
(names, arguments, options, defaults, help), so the docs never restate them."""

from __future__ import annotations

import typer.main

from phonemekit.cli.base import app


def _default(param) -> str:
    if param.required or param.default is None or (isinstance(param.default, (list, tuple)) and not param.default):
        return ""
    if isinstance(param.default, bool):
        return "yes" if param.default else "no"
    return f"`{param.default}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def reference_markdown() -> str:
    """Every subcommand: its help, usage, arguments and options."""
    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        opts = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]
        usage = " ".join(["phonemekit", name, *(a.name.upper() for a in args), "[OPTIONS]" if opts else ""]).strip()
        out += [f"## `{name}`", "", _cell(cmd.help), "", "```", usage, "```", ""]
        if args:
            out += ["| argument | help |", "|---|---|"]
            out += [f"| `{a.name.upper()}` | {_cell(getattr(a, 'help', ''))} |" for a in args]
            out.append("")
        if opts:
            out += ["| option | default | help |", "|---|---|---|"]
            for o in opts:
                names = ", ".join(f"`{n}`" for n in [*o.opts, *o.secondary_opts])
                out.append(f"| {names} | {_default(o)} | {_cell(o.help)}{' (required)' if o.required else ''} |")
            out.append("")
    return "\n".join(out)
