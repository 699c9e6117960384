"""``helioforge data``: which data folder is used, and fetching the full sample."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from helioforge.cli.common import console, fail
from helioforge.config import data_root, describe_data_root
from helioforge.data.fetch import REGISTRY, fetch, read_registry, select_entries

data_app = typer.Typer(help="The real data: which folder is used (path), and downloading the full sample (fetch).",
                       no_args_is_help=True)


@data_app.command("path")
def path_cmd() -> None:
    """Print the data folder in use (stdout) and the rule that chose it (stderr).

    The rule, for every command, test and benchmark: --data → $HELIOFORGE_DATA →
    ../shared/data beside the checkout → the full sample fetched by `helioforge data fetch` →
    the embedded sample inside the package.
    """
    console.print(describe_data_root())
    typer.echo(str(data_root()))


@data_app.command("fetch")
def fetch_cmd(
    parts: Optional[list[str]] = typer.Argument(None, help="Parts to fetch: sharp, sharp_bad, hmi_fulldisk, aia, goes, "
                                                "stokes, or any path prefix (e.g. stokes/instrument). Default: all."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Destination folder (default: the user cache, "
                                          "$HELIOFORGE_CACHE or <user cache>/helioforge/data)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Base URL of a copy laid out like the data folder "
                                         "(https://… or file:///…), used instead of the registry's URLs."),
    registry: Optional[Path] = typer.Option(None, "--registry", help="Registry CSV (path, sha256, size, url, source, "
                                            "licence); default: the one shipped with helioforge."),
    list_only: bool = typer.Option(False, "--list", help="List the files of the parts (size, source) and stop."),
    retries: int = typer.Option(2, "--retries", help="Further attempts per file after a failure."),
) -> None:
    """Download the full real sample (or named parts) from its public sources, verified by SHA-256.

    Files are downloaded with pooch to a temporary name and renamed only after their hash
    matches, so nothing half-written or corrupted is kept; files already present are verified
    and skipped, so an interrupted fetch resumes. Each failed file is reported with its reason
    and the rest go on (exit status 1 if any failed). Once every file is there, the folder is
    used by all commands (see `helioforge data path`).
    """
    reg = registry or REGISTRY
    if list_only:
        try:
            entries = select_entries(read_registry(reg), parts)
        except (FileNotFoundError, ValueError) as e:
            fail(str(e))
        for e in entries:
            typer.echo(f"{e.path}\t{e.size}\t{e.url or '(no public URL)'}\t{e.source}")  # tabs kept (rich expands them)
        console.print(f"{len(entries)} file(s), {sum(e.size for e in entries) / 2**20:.1f} MiB")
        return
    try:
        rep = fetch(parts, output, registry=reg, mirror=mirror, retries=retries)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    for path, reason in rep.failed:
        console.print(f"[red]failed[/red] {path}: {reason}")
    console.print(f"{rep.dest}: {len(rep.fetched)} downloaded, {len(rep.present)} already present (verified), "
                  f"{len(rep.failed)} failed" + ("; complete: used as the data folder from now on" if rep.complete else ""))
    if rep.failed:
        raise typer.Exit(1)
