"""Loading from local folders or the Hub, with errors that say what was looked for and where."""

import os

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
from transformers import AutoModelForSemanticSegmentation, PreTrainedModel


__all__ = [
    "check_hub_ids",
    "check_local_path",
    "is_hub_id",
    "load_segmentation_model",
    "looks_local",
    "not_found_error",
]

HUB_TIMEOUT = 10.0  # seconds for one look-up: an unreachable endpoint fails at once, not after minutes of retries


def looks_local(name: str) -> bool:
    """A name that can only be a local path: Hub ids are `name` or `owner/name`, `owner` is no local folder, and
    no repo is named like a parquet file."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or ("/" in name and os.path.isdir(name.split("/")[0]))
        or name.endswith(".parquet")
    )


def is_hub_id(name) -> bool:
    """Whether `name` names a Hub repo: a string that is no local file or folder and cannot be one."""
    return isinstance(name, str) and bool(name) and not os.path.exists(name) and not looks_local(name)


def not_found_error(what: str, name: str, error: Exception | None, kind: str) -> ValueError:
    """An error that says which local path and which Hub id on which endpoint were looked for."""
    path = os.path.abspath(name)
    if os.path.exists(path):
        looked = f"the folder {path} exists but holds no loadable {kind}"
    elif looks_local(name):
        looked = f"there is no file or folder {path}"
    else:
        looked = f"there is no file or folder {path}, and no {kind} '{name}' on {constants.ENDPOINT}"
    reason = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else None
    return ValueError(f"Could not load {what} '{name}': {looked}" + (f" ({reason})." if reason else "."))


def check_local_path(name: str, what: str, kind: str) -> None:
    """Fail at once, without asking the Hub, for a local path that does not exist."""
    if isinstance(name, str) and looks_local(name) and not os.path.exists(name):
        raise not_found_error(what, name, None, kind)


def load_segmentation_model(name_or_path: str, what: str = "the model", **kwargs) -> PreTrainedModel:
    """`AutoModelForSemanticSegmentation.from_pretrained`, with an error that says what was looked for."""
    check_local_path(name_or_path, what, "model")
    try:
        return AutoModelForSemanticSegmentation.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise not_found_error(what, name_or_path, error, "model") from None


def check_hub_ids(*items: tuple[str, str | None, str]) -> None:
    """Look up every Hub id a run will load (`(what, name, repo_type)`; local paths and `None` are skipped), once and
    before any data is loaded: a missing repo, or an endpoint that cannot be reached, fails in seconds with an error
    that names the id, the endpoint and the way out, instead of after the loaders' retries. A local path that does not
    exist fails first, without the network. Offline
    (`HF_HUB_OFFLINE=1`), the loaders read the local cache and nothing is looked up."""
    for what, name, repo_type in items:  # a missing local folder needs no network to be named
        check_local_path(name, what, repo_type)
    if constants.HF_HUB_OFFLINE:
        return
    api = HfApi()
    for what, name, repo_type in items:
        if not is_hub_id(name):
            continue
        try:
            api.repo_info(name, repo_type=repo_type, timeout=HUB_TIMEOUT)
        except RepositoryNotFoundError:
            raise not_found_error(what, name, None, repo_type) from None
        except GatedRepoError:
            raise ValueError(
                f"{what.capitalize()} '{name}' on {constants.ENDPOINT} is gated: accept its terms on its page and log "
                "in (`hf auth login`), or give a local folder."
            ) from None
        except HfHubHTTPError as error:
            raise ValueError(f"Could not look up {what} '{name}' on {constants.ENDPOINT}: {error}") from None
        except Exception as error:  # the HTTP client's transport errors: the endpoint cannot be reached
            raise ValueError(
                f"Could not reach {constants.ENDPOINT} to find {what} '{name}' ({type(error).__name__}: {error}). "
                "Without a network, set HF_HUB_OFFLINE=1 to use what is cached, or give a local folder."
            ) from None
