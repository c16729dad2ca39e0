"""`privit keygen` and `privit cluster init`: the role keys and the cluster file.

    privit keygen NAME --out DIR          -> DIR/NAME.key (secret, 0600), DIR/NAME.pub
    privit cluster init --out DIR [--parties N] [--hosts H0,H1,...,HD] [--port P]
                                          -> DIR/cluster.json + a key pair per role
                                             (party0, party1, ..., dealer)

Copy cluster.json to every host, and each role's NAME.key to its own host only.
"""
from __future__ import annotations

from pathlib import Path

import click

from privit.parties.cluster import Cluster, ClusterError, Endpoint, key_name
from privit.parties.keys import RoleKeys

DEFAULT_PORT = 5000


@click.command("keygen")
@click.argument("name")  # click arguments take no help: the docstring describes NAME
@click.option("--out", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False), help="folder for NAME.key and NAME.pub")
def keygen_command(name: str, out_dir: str) -> None:
    """Write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub."""
    if not name or "/" in name or name.startswith("."):
        raise click.BadParameter(f"{name!r} is not a plain file name", param_hint="NAME")
    secret, public = RoleKeys.generate(name).save(out_dir)
    click.echo(f"wrote {secret} (the secret key, mode 0600: keep it on this role's host only)")
    click.echo(f"wrote {public} (the public key)")


@click.group("cluster")
def cluster_group() -> None:
    """Cluster files: where each role listens and its public key."""


@cluster_group.command("init")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for cluster.json and the role key pairs")
@click.option("--parties", "n_parties", default=2, show_default=True, type=click.IntRange(min=2),
              help="number of computing parties (the dealer comes on top)")
@click.option("--hosts", default=None,
              help="comma-separated hosts: one per party, then the dealer's "
                   "(default: 127.0.0.1 for every role)")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535),
              help="port of the first role on a host; roles sharing a host take the next ports")
def cluster_init_command(out_dir: str, n_parties: int, hosts: str | None, port: int) -> None:
    """Write DIR/cluster.json and a key pair per role (party0, party1, ..., dealer)."""
    n_roles = n_parties + 1
    host_list = hosts.split(",") if hosts else ["127.0.0.1"] * n_roles
    if len(host_list) != n_roles:
        raise click.BadParameter(
            f"{len(host_list)} hosts for {n_roles} roles ({n_parties} parties and the dealer)",
            param_hint="--hosts")
    next_port: dict[str, int] = {}
    endpoints = []
    keys = []
    for role, host in enumerate(host_list):
        host = host.strip()
        role_port = next_port.get(host, port)
        next_port[host] = role_port + 1
        if role_port > 65535:
            raise click.BadParameter(f"too many roles on {host} from port {port}", param_hint="--port")
        key = RoleKeys.generate(key_name(role, n_parties))
        keys.append(key)
        try:
            endpoints.append(Endpoint(host, role_port, key.public_key))
        except ClusterError as exc:
            raise click.BadParameter(str(exc), param_hint="--hosts") from None
    cluster = Cluster(tuple(endpoints[:-1]), endpoints[-1])
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster.json"
    cluster.save(path)
    click.echo(f"wrote {path} (the cluster file)")
    for role, key in enumerate(keys):
        secret, public = key.save(folder)
        ep = cluster.endpoint(role)
        click.echo(f"wrote {secret} and {public} ({key.name} at {ep.host}:{ep.port})")
    click.echo("copy cluster.json to every host and each NAME.key to its own role's host only")


KEY_COMMANDS = (keygen_command, cluster_group)
