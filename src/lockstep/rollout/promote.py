"""Force-promoting an Environment's rollout in progress (`rollout promote --force`, and the
server's `POST /api/environments/{name}/promote`): sets spec.forcePromote."""

from __future__ import annotations

from lockstep.errors import StateError
from lockstep.rollout.resource import NIL_UUID, V1ALPHA1, up_to_date
from lockstep.rollout.store import ConflictError, EnvironmentStore

ATTEMPTS = 5  # conditional writes tried before giving up on an object that keeps changing


def force_promote(store: EnvironmentStore, name: str) -> str:
    """Set spec.forcePromote := status.requestedRolloutHash (v1alpha1: := spec.requestRollout)
    on the stored Environment `name`; the value set. StateError when no rollout is in progress."""
    for _ in range(ATTEMPTS):
        stored = store.get(name)
        body = stored.full()
        st = stored.status if isinstance(stored.status, dict) else {}
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise StateError(f"environment {name} has no readable spec",
                             "write it again with `lockstep rollout apply FILE`")
        requested = (spec.get("requestRollout") if body.get("apiVersion") == V1ALPHA1
                     else st.get("requestedRolloutHash"))
        cond = up_to_date(st)
        if not isinstance(requested, str) or requested in ("", NIL_UUID) \
                or cond.get("reason") not in ("Applying", "ReadyToPromote"):
            raise StateError(f"environment {name} has no rollout in progress "
                             f"(condition {cond.get('reason', 'none')})",
                             "see `lockstep rollout status NAME`")
        body["spec"] = spec | {"forcePromote": requested}
        try:
            store.put(body, expected_rv=stored.resource_version)
        except ConflictError:
            continue
        return requested
    raise StateError(f"environment {name} kept changing", "run the command again")
