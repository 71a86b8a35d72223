"""`python -m maildash`: the operators' command line, a client of the api like the dashboard.

Connection and credentials come from options or the environment: MAILDASH_CLI_API_URL (default
http://127.0.0.1:8000), MAILDASH_CLI_EMAIL and MAILDASH_CLI_PASSWORD (asked for when a command logs in and
none is set; `--help` never asks).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

app = typer.Typer(help="Maildash Campaigns for operators.", no_args_is_help=True)
workspace = typer.Typer(help="Workspaces (superuser).", no_args_is_help=True)
user = typer.Typer(help="Users (superuser).", no_args_is_help=True)
leads = typer.Typer(help="Leads.", no_args_is_help=True)
campaign = typer.Typer(help="Campaigns.", no_args_is_help=True)
app.add_typer(workspace, name="workspace")
app.add_typer(user, name="user")
app.add_typer(leads, name="leads")
app.add_typer(campaign, name="campaign")

console = Console(stderr=True)
CHUNK = 256 * 1024


class Connection:
    def __init__(self, url: str, email: str, password: str) -> None:
        self.url, self.email, self.password = url.rstrip("/"), email, password

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        """A client logged in with a fresh token; the password is asked for here, when it is needed."""
        if not self.password:
            self.password = typer.prompt(f"Password of {self.email}", hide_input=True)
        with httpx.Client(base_url=f"{self.url}/api/v1", timeout=httpx.Timeout(30, read=600)) as client:
            try:
                reply = client.post("/auth/token", data={"username": self.email, "password": self.password})
            except httpx.HTTPError as error:
                fail(f"cannot reach the api at {self.url} ({error}); is it running (`make run`)?")
            if reply.status_code != 200:
                fail(f"login as {self.email} failed: {reply.json().get('error', reply.text)}")
            client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
            yield client


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def answer(reply: httpx.Response) -> Any:
    """The envelope's data, or the api's own error message and exit status 1."""
    try:
        body = reply.json()
    except ValueError:
        fail(f"HTTP {reply.status_code}: {reply.text[:200]}")
    if reply.is_error:
        fields = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in body.get("fields", []))
        fail(
            f"{body.get('error')}"
            + (f" ({fields})" if fields and fields not in body.get("error", "") else "")
        )
    return body["data"]


def show(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.callback()
def connect(
    context: typer.Context,
    api_url: Annotated[str, typer.Option(envvar="MAILDASH_CLI_API_URL")] = "http://127.0.0.1:8000",
    email: Annotated[str, typer.Option(envvar="MAILDASH_CLI_EMAIL", help="your login")] = "admin@example.com",
    password: Annotated[
        str,
        typer.Option(envvar="MAILDASH_CLI_PASSWORD", show_default=False, help="asked for when not given"),
    ] = "",
) -> None:
    context.obj = Connection(api_url, email, password)


@workspace.command("create")
def create_workspace(
    context: typer.Context,
    name: str,
    admin_email: Annotated[str, typer.Option(help="the first admin's login")],
    admin_password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a workspace and its first admin user."""
    with context.obj.client() as client:
        body = {"name": name, "admin_email": admin_email, "admin_password": admin_password}
        show(answer(client.post("/workspaces", json=body)))


@user.command("deactivate")
def deactivate_user(context: typer.Context, email: str) -> None:
    """Lock a user out at once: no more logins, and the tokens they hold stop working."""
    _set_active(context, email, "deactivate")


@user.command("activate")
def activate_user(context: typer.Context, email: str) -> None:
    """Let a deactivated user log in again."""
    _set_active(context, email, "activate")


def _set_active(context: typer.Context, email: str, action: str) -> None:
    with context.obj.client() as client:
        data = answer(client.post(f"/users/{action}", json={"email": email}))
        console.print(f"user {data['email']} is {'active' if data['active'] else 'deactivated'}")


def _chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            progress.update(task, advance=len(chunk))
            yield chunk


@leads.command("import")
def import_leads(
    context: typer.Context, path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
) -> None:
    """Import leads from a CSV file; its header names email, first_name, last_name, company, tags, and any
    custom fields."""
    boundary = "maildash-cli-upload"
    filename = path.name.replace('"', "_")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    columns = [BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    with context.obj.client() as client, Progress(*columns, console=console) as progress:

        def body() -> Iterator[bytes]:
            yield head
            yield from _chunks(path, progress)
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        reply = client.post("/leads/import", content=body(), headers=headers)
    result = answer(reply)
    console.print(
        f"created {result['created']}, updated {result['updated']}, skipped {result['skipped']},"
        f" errors {len(result['errors'])}"
    )
    for error in result["errors"][:20]:
        console.print(f"  line {error['row']}: {error['error']}")


def _lifecycle(context: typer.Context, campaign_id: str, action: str) -> None:
    with context.obj.client() as client:
        data = answer(client.post(f"/campaigns/{campaign_id}/{action}"))
        console.print(f"campaign {data['name']!r} is {data['status']}")


LIFECYCLE = {
    "start": "Start a draft campaign.",
    "pause": "Pause: returns once no new e-mail of the campaign can start.",
    "resume": "Resume a paused campaign, planning its unsent e-mails from now.",
    "stop": "Stop for good: unsent e-mails are cancelled.",
}


def _lifecycle_command(action: str) -> Callable[[typer.Context, str], None]:
    def command(context: typer.Context, campaign_id: str) -> None:
        _lifecycle(context, campaign_id, action)

    return command


for _action, _help in LIFECYCLE.items():
    campaign.command(_action, help=_help)(_lifecycle_command(_action))


@campaign.command("show")
def show_campaign(context: typer.Context, campaign_id: str) -> None:
    """The campaign with its KPIs and timeline."""
    with context.obj.client() as client:
        show(answer(client.get(f"/campaigns/{campaign_id}")))
