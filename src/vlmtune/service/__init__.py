"""The customization service: the managed service's control plane, really training, behind boto3's `bedrock` client.

    config.py          ServiceConfig: home and storage folders, address, API key, job slots, stop timeout, restart
                       policy, the executor (local or ray) and its options
    app.py             Service: the store, the runner, deployments and the runtime behind one FastAPI app and port
    routes.py          the control-plane HTTP routes (FastAPI), thin calls into the modules below
    errors.py          the control plane's error types, as botocore parses them (x-amzn-ErrorType + {"message"})
    requests.py        request bodies with the service model's required fields, patterns and ranges; idempotency
    store.py           SQLite under the home folder: one connection, transactions, JSON columns
    migrations.py      the schema as ordered migration steps, one table per concept
    names.py           ids, ARNs, name patterns, timestamps; identifiers (ARN, name or id) -> rows
    listing.py         List* filters, sort order and nextToken paging, the same for every resource
    locations.py       s3:// URIs, file:// URIs and absolute paths: read a file, upload a folder, copy a prefix
    customization.py   model customization jobs: create / get / list / stop; hyperParameters -> the training config
    models.py          custom and imported models; any identifier -> the ModelSource the loaders take
    deployments.py     deployments: a model loaded into the runtime's EngineRegistry, updated, unloaded
    imports.py         model import jobs and CreateCustomModel: copy a folder, check its files and architecture
    invocations.py     batch inference jobs: create / get / list / stop
    runner.py          the job queue: slots, workers started through an executor, progress, stop, recovery
    executor.py        Executor: how a worker is started, watched and stopped (LocalExecutor: a child process)
    ray_executor.py    RayExecutor: each worker a Ray job (Jobs API), Ray's statuses mapped, stopped through Ray
    ray_logs.py        a Ray job's log followed into the job's worker.log, once, across reconnects and restarts
    placement.py       N workers x G GPUs of a job: the service's defaults or the job's `workers`, `gpus_per_worker`
    ray_training.py    a job over several workers: actors in a placement group start the DDP processes
    progress.py        the files a worker and the service share in the job's folder (spec, progress, stop)
    worker.py          inside a worker process: stage and validate the data, then the job's own part
    staging.py         a job's data copied into its folder line for line, image paths absolute, validated
    finetune.py        the training part of a worker: the recipe of `vlmtune train`, then the upload
    batch.py           batch inference in a worker: Converse inputs answered, error lines, the manifest
    dashboard/         the page at `/`: jobs, live curves, compare, predictions, models, playground, machine
"""
