"""Run a DAG defined in a test (not in a DAG bundle folder) with ``dag.test()``.

Airflow 3.3's ``dag.test()`` looks the DAG up in the metadata database, where only DAGs parsed from a
bundle folder are written. A DAG built inside a test function is registered first, the way the DAG
processor would register it, then run for real.
"""

from __future__ import annotations

from typing import Any

BUNDLE_NAME = "dags-folder"


def register_dag(dag: Any) -> None:
    """Serialize ``dag`` into the metadata database under the default bundle."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    # A fresh database knows no bundle until a DAG processor has run: register it as that would.
    DagBundlesManager().sync_bundles_to_db()  # type: ignore[no-untyped-call]
    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE_NAME, None)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Register ``dag`` and run it with ``dag.test(**kwargs)``; returns the finished DagRun."""
    register_dag(dag)
    return dag.test(**kwargs)
