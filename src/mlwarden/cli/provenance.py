"""``mlwarden keygen|sign|verify|bom|encrypt|decrypt``: provenance and encryption at rest.

Thin adapters over `mlwarden.supplychain.signing`; no torch import.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import AllowOption

SignatureOption = typer.Option(
    None,
    "--signature",
    "-s",
    help="Signature file (default: FOLDER/model.sig for a folder, FILE.sig for a file).",
)


def keygen_command(
    private: Path = typer.Argument(..., help="Where to write the private key (PEM, mode 600)."),
    public: Path = typer.Argument(..., help="Where to write the public key (PEM)."),
) -> None:
    """Make an elliptic-curve (P-256) key pair for offline signing."""
    from mlwarden.supplychain.signing import generate_signing_key

    generate_signing_key(private, public)
    typer.echo(f"wrote private key {private} and public key {public}")


def sign_command(
    path: Path = typer.Argument(..., help="Model folder or file to sign."),
    key: Path | None = typer.Option(None, "--key", "-k", help="PEM private key (offline)."),
    sigstore: bool = typer.Option(
        False,
        "--sigstore",
        help="Sign keyless through Sigstore (online; token in $SIGSTORE_ID_TOKEN).",
    ),
    signature: Path | None = SignatureOption,
    allow: list[str] = AllowOption,
) -> None:
    """Scan a model, then sign its files and the scan verdict (OpenSSF model signing)."""
    from mlwarden.supplychain.signing import sign_model

    result = sign_model(path, key=key, sigstore=sigstore, signature=signature, allow=allow)
    typer.echo(
        f"signed {len(result.files)} file(s) of {result.model} (scan verdict "
        f"{result.scan['verdict']}) -> {result.signature}"
    )


def verify_command(
    path: Path = typer.Argument(..., help="Model folder or file to verify."),
    key: Path | None = typer.Option(None, "--key", "-k", help="PEM public key."),
    identity: str | None = typer.Option(None, "--identity", help="Sigstore signer identity."),
    issuer: str | None = typer.Option(None, "--issuer", help="Sigstore OIDC issuer."),
    signature: Path | None = SignatureOption,
) -> None:
    """Verify a model against its signature; exit 3 when it does not verify."""
    from mlwarden.supplychain.signing import verify_model

    check = verify_model(path, key=key, identity=identity, issuer=issuer, signature=signature)
    scan = (
        f"; scanned by {check.scan.get('tool')} at {check.scan.get('scanned_at')}: "
        f"verdict {check.scan_verdict}"
        if check.scan
        else "; no scan verdict in the signature"
    )
    typer.echo(
        f"verified {len(check.files)} file(s) of {check.model}, signed by {check.signer}{scan}"
    )


def bom_command(
    path: Path = typer.Argument(..., help="Model folder or file."),
    output: Path = typer.Option(
        Path("bom.cdx.json"), "--output", "-o", help="Where to write the CycloneDX JSON."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: folder name)."),
    version: str | None = typer.Option(None, "--version", help="Model version."),
    key: Path | None = typer.Option(
        None, "--key", "-k", help="PEM public key: verify the signature for the BOM."
    ),
    allow: list[str] = AllowOption,
) -> None:
    """Write a CycloneDX 1.6 ML-BOM: file hashes, model card, scan verdict, signature status."""
    from mlwarden.supplychain.bom import build_bom, write_bom

    document = build_bom(path, name=name, version=version, key=key, allow=allow)
    model = document["components"][0]
    files = len(model.get("components", [])) or 1
    verdict = next(p["value"] for p in model["properties"] if p["name"] == "mlwarden:scan:verdict")
    write_bom(document, output)
    typer.echo(f"wrote {output}: {files} file(s), scan verdict {verdict} (CycloneDX 1.6, valid)")


KeyFileOption = typer.Option(
    None, "--key-file", "-k", help="File holding the 256-bit key (base64, hex or 32 raw bytes)."
)
KeyEnvOption = typer.Option(
    None,
    "--key-env",
    help="Environment variable holding the key (default: $MLWARDEN_MODEL_KEY when no key file).",
)


def encrypt_command(
    path: Path = typer.Argument(..., help="Model file, or Hugging Face model folder, to encrypt."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default: PATH.enc."),
    key_file: Path | None = KeyFileOption,
    key_env: str | None = KeyEnvOption,
    new_key: bool = typer.Option(
        False, "--new-key", help="Create the --key-file first (a new random key, mode 600)."
    ),
) -> None:
    """Encrypt a model file, or a model folder into one file, with AES-256-GCM (authenticated,
    chunked); the key never on argv. ``load_model`` and ``serve`` decrypt into memory."""
    from mlwarden.core.errors import InputError
    from mlwarden.supplychain.encryption import (
        encrypt_file,
        encrypt_folder,
        generate_key,
        read_key,
    )

    if new_key:
        if key_file is None:
            raise InputError("--new-key needs --key-file: the file to write the new key to")
        generate_key(key_file)
        typer.echo(f"wrote a new key to {key_file} (keep it apart from the model)", err=True)
    key = read_key(key_file, key_env)
    target = output or path.with_name(path.name + ".enc")
    if path.is_dir():
        out = encrypt_folder(path, target, key)
        typer.echo(f"encrypted folder {path} -> {out} (one AES-256-GCM archive of its files)")
        return
    out = encrypt_file(path, target, key)
    typer.echo(f"encrypted {path} -> {out} (AES-256-GCM)")


def decrypt_command(
    path: Path = typer.Argument(..., help="Encrypted model file."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default: PATH without .enc."),
    key_file: Path | None = KeyFileOption,
    key_env: str | None = KeyEnvOption,
) -> None:
    """Decrypt a file to disk (loaders need not: they decrypt into memory)."""
    from mlwarden.core.errors import InputError
    from mlwarden.supplychain.encryption import decrypt_file, read_key

    if output is None:
        if not path.name.endswith(".enc"):
            raise InputError(f"'{path}' does not end in .enc; name the output with -o")
        output = path.with_name(path.name.removesuffix(".enc"))
    if output.exists():
        raise InputError(f"'{output}' already exists; it is not overwritten")
    from mlwarden.supplychain.encryption import FOLDER_SUFFIX, read_header_suffix

    folder = read_header_suffix(path) == FOLDER_SUFFIX
    out = decrypt_file(path, output, read_key(key_file, key_env))
    typer.echo(f"decrypted {path} -> {out}" + (" (a tar of the folder: tar -xf)" if folder else ""))
