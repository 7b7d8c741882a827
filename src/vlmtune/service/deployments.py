"""Custom model deployments: a custom or imported model loaded into the runtime, served by name and ARN.

Create loads the model (a LoRA adapter is merged into its base) on a background thread and puts an Engine in
the runtime's EngineRegistry under the deployment's ARN, its name and the model's ARN: Converse's `modelId`
and OpenAI's `model` take any of them. Update loads the new model first and swaps it in without dropping a
request; Delete takes the names away, lets queued requests finish and unloads the model. After a restart
every deployment is loaded again.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.models.generate import for_inference
from vlmtune.models.loading import load_model
from vlmtune.service import listing, models
from vlmtune.service import names as n
from vlmtune.service.errors import ValidationError
from vlmtune.service.requests import CreateDeployment, UpdateDeployment, parse, repeated, request_hash
from vlmtune.serving import BadRequest
from vlmtune.serving.engine import Engine

log = logging.getLogger(__name__)
TABLE = "deployments"
STATUSES = ("Creating", "Active", "Failed")


class Deployments:
    """The deployments of one service and the engines that serve them."""

    def __init__(self, svc):
        self.svc = svc
        self.engines: dict[str, Engine] = {}  # deployment ARN -> its engine
        self._lock = threading.Lock()

    # ---- API ---------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        req = parse(CreateDeployment, body)
        source = self._deployable(req.modelArn)
        digest, store = request_hash(body), self.svc.store
        with store.transaction():
            if row := repeated(store, TABLE, req.clientRequestToken, digest):
                return {"customModelDeploymentArn": row["arn"]}
            if n.find(store, TABLE, req.modelDeploymentName):
                raise ValidationError(f"a deployment named {req.modelDeploymentName!r} already exists")
            dep_id, now = n.new_id(), n.now()
            arn = self.svc.arns.deployment(dep_id)
            store.insert(TABLE, {"id": dep_id, "arn": arn, "name": req.modelDeploymentName, "client_token": req.clientRequestToken,
                                 "request_hash": digest, "tags": [t.model_dump() for t in req.tags], "model_arn": source.arn,
                                 "description": req.description, "status": "Creating", "created_at": now, "last_updated_at": now})
        self._start(arn, source)
        return {"customModelDeploymentArn": arn}

    def update(self, identifier: str, body: dict) -> dict:
        req = parse(UpdateDeployment, body)
        row = n.get(self.svc.store, TABLE, identifier)
        if row["status"] != "Active" or row["update_status"] == "Updating":
            raise ValidationError(f"deployment {row['name']!r} is {row['update_status'] or row['status']}; update it once it is Active")
        source = self._deployable(req.modelArn)
        self.svc.store.update(TABLE, "id", row["id"], {"update_model_arn": source.arn, "update_status": "Updating",
                                                       "failure_message": None, "last_updated_at": n.now()})
        self._start(row["arn"], source, updating=True)
        return {"customModelDeploymentArn": row["arn"]}

    def delete(self, identifier: str) -> None:
        row = n.get(self.svc.store, TABLE, identifier)
        self.svc.store.execute(f"DELETE FROM {TABLE} WHERE id = ?", (row["id"],))
        with self._lock:
            engine = self.engines.pop(row["arn"], None)
        if engine is not None:  # drained in the background: queued requests still get their answers
            threading.Thread(target=self.svc.registry.remove, args=(engine,), daemon=True).start()

    def get(self, identifier: str) -> dict:
        return describe(n.get(self.svc.store, TABLE, identifier))

    def list(self, query) -> dict:
        filters = (listing.Filters(query).time_range("createdAfter", "createdBefore", "created_at").contains("nameContains")
                   .equals("statusEquals", "status", STATUSES).equals("modelArnEquals", "model_arn"))
        rows, token = listing.page(self.svc.store, TABLE, "created_at", filters)
        return {"modelDeploymentSummaries": [summary(r) for r in rows]} | ({"nextToken": token} if token else {})

    def recover(self) -> None:
        """Load every deployment again after a restart (they were serving when the service stopped)."""
        for row in self.svc.store.query(f"SELECT * FROM {TABLE} WHERE status IN ('Creating', 'Active')"):
            self.svc.store.update(TABLE, "id", row["id"], {"status": "Creating", "update_status": None, "last_updated_at": n.now()})
            try:
                self._start(row["arn"], models.resolve(self.svc, row["model_arn"], "modelArn"))
            except VlmtuneError as e:
                self._failed(row["arn"], f"could not be loaded again after a restart: {e}")

    # ---- loading -----------------------------------------------------------------------------
    def _deployable(self, identifier: str) -> models.ModelSource:
        source = models.resolve(self.svc, identifier, "modelArn")
        if ":custom-model/" not in source.arn and ":imported-model/" not in source.arn:
            raise ValidationError(f"modelArn: expected the ARN or name of a custom or imported model, found {identifier!r}")
        return source

    def _start(self, arn: str, source: models.ModelSource, updating: bool = False) -> None:
        threading.Thread(target=self._load, args=(arn, source, updating), name=f"vlmtune-deploy-{arn[-12:]}", daemon=True).start()

    def _load(self, arn: str, source: models.ModelSource, updating: bool) -> None:
        try:
            engine = load_engine(source, arn, self.svc.cfg.device)
        except Exception as e:  # noqa: BLE001 - any load failure is the deployment's failure, with its reason
            log.exception("loading %s for %s failed", source.arn, arn)
            self._failed(arn, f"loading {source.arn} failed: {e}", updating)
            return
        row = n.find(self.svc.store, TABLE, arn)
        if row is None:  # deleted while it loaded
            return
        names = {arn: arn, row["name"]: arn}
        try:
            self.svc.registry.resolve(source.arn)
        except BadRequest:
            names[source.arn] = arn  # the model's ARN reaches its first deployment
        with self._lock:
            old = self.engines.get(arn)
            self.engines[arn] = engine
        if old is not None:
            self.svc.registry.replace(old, engine, names, [row["name"]])
        else:
            self.svc.registry.add(engine, names, [row["name"]])
        values = {"status": "Active", "failure_message": None, "last_updated_at": n.now()}
        if updating:
            values |= {"model_arn": source.arn, "update_status": "UpdateCompleted"}
        self.svc.store.update(TABLE, "arn", arn, values)

    def _failed(self, arn: str, message: str, updating: bool = False) -> None:
        values = {"update_status": "UpdateFailed"} if updating else {"status": "Failed"}
        self.svc.store.update(TABLE, "arn", arn, values | {"failure_message": message[:2048], "last_updated_at": n.now()})


def load_engine(source: models.ModelSource, arn: str, device: str) -> Engine:
    """The model behind a deployment in an Engine of its own, whose one model id is the deployment's ARN."""
    adapters = {"default": Path(source.adapter)} if source.adapter else None
    model, processor = load_model(source.source, device, adapters=adapters)
    if source.adapter:
        model = model.merge_and_unload()
    return Engine(for_inference(model), processor, arn, [])


def describe(row: dict) -> dict:
    out = {"customModelDeploymentArn": row["arn"], "modelDeploymentName": row["name"], "modelArn": row["model_arn"],
           "createdAt": row["created_at"], "status": row["status"], "description": row["description"],
           "failureMessage": row["failure_message"], "lastUpdatedAt": row["last_updated_at"],
           "updateDetails": {"modelArn": row["update_model_arn"], "updateStatus": row["update_status"]} if row["update_status"] else None}
    return {k: v for k, v in out.items() if v is not None}


def summary(row: dict) -> dict:
    out = {"customModelDeploymentArn": row["arn"], "customModelDeploymentName": row["name"], "modelArn": row["model_arn"],
           "createdAt": row["created_at"], "status": row["status"], "lastUpdatedAt": row["last_updated_at"],
           "failureMessage": row["failure_message"]}
    return {k: v for k, v in out.items() if v is not None}
