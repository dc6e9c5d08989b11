"""Sharing trained maskers: local folders and the Hugging Face Hub, in the saved-masker layout.

A shared masker is exactly what :meth:`RealTimeMaskAttribution.save` writes (``config.json``
with its format version and file hashes, and ``masker.safetensors``), plus a ``README.md``
model card. :func:`save_pretrained` writes such a folder, :func:`push_to_hub` uploads one,
and :func:`from_pretrained` reads it back from a folder or from a Hub repository, with every
check of :meth:`RealTimeMaskAttribution.load` (file hashes, the classifier's class count).

The Hub calls go through ``huggingface_hub`` (the ``hub`` extra: ``pip install
"captum-realtime-mask[hub]"``): :func:`huggingface_hub.snapshot_download` for reading, which
caches and honours ``HF_HUB_OFFLINE`` and ``HF_TOKEN``, and :class:`huggingface_hub.HfApi`
for writing. huggingface_hub's ``ModelHubMixin`` is not used: its ``save_pretrained`` deletes
an existing ``config.json`` before writing, which would break the atomic, never-delete-what-
it-did-not-write saves of :mod:`captum_realtime_mask.checkpoint`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captum_realtime_mask import __version__
from captum_realtime_mask.checkpoint import CONFIG_NAME, atomic_write_bytes
from captum_realtime_mask.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from captum_realtime_mask.attribution import RealTimeMaskAttribution

__all__ = [
    "MODEL_CARD_NAME",
    "SHARED_FILES",
    "SharingMixin",
    "from_pretrained",
    "push_to_hub",
    "save_pretrained",
]

#: The model card written beside the masker (kept when it exists: it may be the user's own).
MODEL_CARD_NAME = "README.md"
#: The files a shared masker consists of; a download fetches only these.
SHARED_FILES = (CONFIG_NAME, "masker.safetensors", MODEL_CARD_NAME)


def save_pretrained(attr: RealTimeMaskAttribution, directory: str | os.PathLike[str]) -> Path:
    """Save the masker (atomically, see :meth:`~RealTimeMaskAttribution.save`) and a model card.

    Returns:
        The folder written.
    """
    attr.save(directory)
    path = Path(directory)
    card = path / MODEL_CARD_NAME
    if not card.exists():
        atomic_write_bytes(card, model_card(attr).encode())
    return path


def model_card(attr: RealTimeMaskAttribution) -> str:
    """A short model card: what the masker is, what it needs, how to load it."""
    config = attr.masker.config
    encoder = config.encoder.kind + (f" ({config.encoder.name})" if config.encoder.name else "")
    return (
        "---\nlibrary_name: captum-realtime-mask\ntags:\n- saliency\n- captum\n- "
        "interpretability\n---\n\n"
        "# A real-time saliency masker\n\n"
        "A learned masking model (Dabkowski & Gal, *Real Time Image Saliency for Black Box "
        f"Classifiers*, NIPS 2017) trained with captum-realtime-mask {__version__} for a "
        f"classifier with {attr.num_classes} classes; encoder: {encoder}. It explains an image "
        "and a class in one forward pass. The classifier's weights are not included: load the "
        "masker with the classifier it was trained for.\n\n"
        "```python\nfrom captum_realtime_mask import RealTimeMaskAttribution\n\n"
        "attr = RealTimeMaskAttribution.from_pretrained(REPO_OR_FOLDER, classifier)\n"
        "masks = attr.attribute(images, target=labels)\n```\n"
    )


def from_pretrained(
    cls: type[RealTimeMaskAttribution],
    name_or_path: str | os.PathLike[str],
    forward_func: Any,
    *,
    encoder: Any = None,
    device: Any = "cpu",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> RealTimeMaskAttribution:
    """Load a masker from a local folder or, when no such folder exists, a Hub repository.

    Raises:
        InputError: ``name_or_path`` is neither a folder nor a valid repository id.
        CheckpointError: The download failed (offline, unknown repository, no access) or the
            files fail :meth:`~RealTimeMaskAttribution.load`'s checks.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise InputError(
            f"expected a folder or a Hub repository id such as 'user/masker', got "
            f"{type(name_or_path).__name__}.",
            argument="name_or_path",
        )
    local = Path(name_or_path).expanduser()
    if not local.is_dir():
        local = _download(os.fspath(name_or_path), revision, cache_dir, local_files_only, token)
    return cls.load(local, forward_func, encoder=encoder, device=device)


def push_to_hub(
    attr: RealTimeMaskAttribution,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload a captum-realtime-mask masker",
    create_pr: bool = False,
) -> str:
    """Save the masker into a temporary folder and upload it to the Hub repository ``repo_id``.

    The repository is created when missing. Needs a network and a token with write access
    (``huggingface-cli login`` or ``HF_TOKEN``).

    Returns:
        The URL of the commit.
    """
    if not isinstance(repo_id, str) or "/" not in repo_id.strip("/"):
        raise InputError(
            f"expected a repository id 'user_or_org/name', got {repo_id!r}.", argument="repo_id"
        )
    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(attr, Path(tmp) / "masker")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            allow_patterns=list(SHARED_FILES),
        )
    return str(getattr(info, "commit_url", info))


def _download(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    """The shared masker's files from the Hub (or its cache), as a local folder."""
    hub = _hub()
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            allow_patterns=list(SHARED_FILES),
            library_name="captum-realtime-mask",
            library_version=__version__,
        )
    except hub.errors.HFValidationError as exc:
        raise InputError(
            f"{repo_id!r} is not a folder here and not a valid Hub repository id ({exc}). "
            "Hint: pass the folder that save_pretrained() wrote, or 'user_or_org/name'.",
            argument="name_or_path",
        ) from exc
    except (OSError, ValueError, hub.errors.HfHubHTTPError) as exc:
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and downloading it from the Hub failed "
            f"({type(exc).__name__}: {exc}). Hint: check the repository id and your network, "
            "or set HF_HUB_OFFLINE=1 to use only the local cache.",
            argument="name_or_path",
        ) from exc
    return Path(folder)


def _hub() -> Any:
    """The ``huggingface_hub`` module, or an error naming the extra that installs it."""
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401  (the exception types used above)
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "sharing maskers through the Hugging Face Hub needs huggingface_hub: "
            'pip install "captum-realtime-mask[hub]"'
        ) from exc
    return huggingface_hub


class SharingMixin:
    """The sharing methods of :class:`~captum_realtime_mask.RealTimeMaskAttribution`.

    ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``, named as in Hugging Face
    libraries; each calls the function of this module of the same name.
    """

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """:meth:`save` plus a ``README.md`` model card (kept if the folder has one).

        The folder is what :meth:`from_pretrained` and :meth:`push_to_hub` share.
        """
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        forward_func: Callable[..., torch.Tensor],
        *,
        encoder: nn.Module | None = None,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> RealTimeMaskAttribution:
        """Load a shared masker from a folder or a Hugging Face Hub repository id.

        A folder that exists is loaded like :meth:`load`; anything else is taken for a
        repository id (``"user/masker"``) and its ``config.json``, ``masker.safetensors`` and
        ``README.md`` are fetched with :func:`huggingface_hub.snapshot_download` (cached;
        ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` reads only the cache). The files go
        through every check of :meth:`load`. Needs the ``hub`` extra for repository ids.

        Args:
            name_or_path: A folder written by :meth:`save_pretrained` or :meth:`save`, or a
                Hub repository id.
            forward_func: The classifier the masker was trained for.
            encoder: The custom encoder module, for maskers saved with one.
            device: Where to put the masker.
            revision: A branch, tag or commit of the repository.
            cache_dir: The Hub cache folder (default: huggingface_hub's).
            local_files_only: Read only the local Hub cache.
            token: A Hub token for private repositories (default: the logged-in one).

        Raises:
            InputError: Not a folder and not a valid repository id.
            CheckpointError: The download failed, or the files fail :meth:`load`'s checks.
        """
        return from_pretrained(
            cls,
            name_or_path,
            forward_func,
            encoder=encoder,
            device=device,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload a captum-realtime-mask masker",
        create_pr: bool = False,
    ) -> str:
        """Upload the masker (the :meth:`save_pretrained` folder) to a Hub model repository.

        Creates the repository when missing. Needs a network, the ``hub`` extra and a token
        with write access (``huggingface-cli login`` or ``HF_TOKEN``).

        Returns:
            The URL of the commit.
        """
        return push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )
