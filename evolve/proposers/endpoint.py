"""The check before a campaign: one `GET /models` that turns a missing key, a dead server, a wrong URL or a
misspelt model into one clear line within seconds, instead of minutes of retried proposals."""
from __future__ import annotations

import os

from evolve.errors import UserError
from evolve.proposers.chat import error_text
from evolve.proposers.llm_config import LLMConfig
from evolve.scrub import add_secret, scrub

CHECK_TIMEOUT_S = 10.0  # the check is one small GET: a live endpoint answers well within this
SHOWN_MODELS = 8  # model ids named in an "unknown model" error


def check_endpoint(config: LLMConfig, timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    """One `GET /models`, no retries, before a campaign starts; returns the model ids the endpoint offers.

    A campaign finds a missing key, a dead server, a wrong URL or a misspelt model only after minutes of
    retried proposals; this finds each in seconds and raises a `UserError` naming what to fix."""
    import openai

    specs = config.model_specs()
    key = os.environ.get(config.api_key_env) or ""
    base = config.base_url or os.environ.get(config.base_url_env) or ""
    where = base or "the OpenAI API"
    if key:
        add_secret(config.api_key_env, key)  # whatever the variable is called, its value never reaches a line
    if not key and not base:
        raise UserError(f"${config.api_key_env} is not set: export your API key in it, or give --base-url for a "
                        "local OpenAI-compatible server (proposer.llm.api_key_env names another variable)")
    client = openai.OpenAI(api_key=key or "no-key-set", base_url=base or None, timeout=timeout_s, max_retries=0)
    try:
        offered = [str(m.id) for m in client.models.list().data]
    except openai.APITimeoutError:
        raise UserError(f"{where} did not answer GET /models within {timeout_s:g}s; check --base-url "
                        f"(proposer.llm.base_url or ${config.base_url_env}) and that the server is up") from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise UserError(scrub(
            f"cannot reach {where} ({type(cause).__name__}: {' '.join(str(cause).split())[:160]}); check --base-url "
            f"(proposer.llm.base_url or ${config.base_url_env}) and that the server is running")) from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        what = "rejected the API key" if key else "needs an API key"
        raise UserError(scrub(f"{where} {what} ({exc.status_code}: {error_text(exc)}); set "
                                     f"${config.api_key_env} to a valid key")) from None
    except openai.NotFoundError:
        raise UserError(f"{where} has no /models (404): the base URL looks wrong; an OpenAI-compatible URL "
                        "usually ends in /v1, e.g. http://127.0.0.1:8000/v1") from None
    except openai.APIStatusError as exc:
        raise UserError(scrub(f"{where} answered GET /models with HTTP {exc.status_code}: "
                                     f"{error_text(exc)}; check the server and --base-url")) from None
    except Exception as exc:  # a body that is not the OpenAI shape: not an OpenAI-compatible endpoint
        raise UserError(scrub(f"{where} gave an unreadable answer to GET /models ({type(exc).__name__}); "
                                     "is it an OpenAI-compatible endpoint (a URL ending in /v1)?")) from None
    known = set(offered) | {m.removesuffix(":latest") for m in offered}  # Ollama serves NAME as NAME:latest
    for spec in specs:
        if offered and spec.weight > 0 and spec.name not in known:
            shown = ", ".join(offered[:SHOWN_MODELS]) + (f" and {len(offered) - SHOWN_MODELS} more"
                                                          if len(offered) > SHOWN_MODELS else "")
            raise UserError(f"{where} does not serve model '{spec.name}'; it offers: {shown}; fix --model "
                            "(or proposer.llm.models)")
    return offered
