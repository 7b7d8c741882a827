"""The customization service: the managed service's control plane, really training, behind boto3's `bedrock` client.

    config.py          ServiceConfig: home folder, address, API key, job slots, restart policy
    errors.py          the control plane's error types, as botocore parses them (x-amzn-ErrorType + {"message"})
    store.py           SQLite under the home folder: one connection, transactions, JSON columns
    migrations.py      the schema as ordered migration steps (one table per concept)
    names.py           ids, ARNs, name patterns, timestamps; identifiers (ARN or name) -> rows
    listing.py         List* filters, sort order and nextToken paging, shared by every resource
    locations.py       s3:// URIs, file:// URIs and local paths: fetch a file, upload a folder, copy a prefix
    requests.py        request bodies (pydantic) with the service model's required fields, patterns and ranges
    customization.py   model customization jobs: create / get / list / stop, hyperParameters -> TrainConfig
    models.py          custom models and imported models: registration, get / list / delete rules
    deployments.py     deployments: load a model into the runtime's EngineRegistry, update, delete
    imports.py         model import jobs: fetch a folder, check its files and architecture, register it
    invocations.py     batch inference jobs: create / get / list / stop
    runner.py          the job queue: slots, launching workers through an executor, progress, stop, recovery
    executor.py        Executor: how a worker is started, watched and stopped (LocalExecutor: a subprocess)
    worker.py          inside a worker process: validate -> train with the recipe -> upload; or batch inference
    progress.py        the files a worker and the service share: job spec, progress, stop requests
    batch.py           batch inference over a JSONL of Converse inputs, with per-record error lines
    routes.py          the control-plane HTTP routes (FastAPI), thin calls into the modules above
    app.py             Service: the store, the runner and the runtime's registry behind one FastAPI app and port
"""
