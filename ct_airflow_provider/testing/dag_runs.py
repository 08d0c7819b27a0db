"""Run a DAG defined in a test (not in a DAG bundle folder) with ``dag.test()``.

From Airflow 3.1 on, ``dag.test()`` looks the DAG up in the metadata database, where only DAGs parsed
from a bundle folder are written. A DAG built inside a test function is registered first, the way the
DAG processor would register it, then run for real. Airflow 2.11 and 3.0 write the DAG themselves.
"""

from __future__ import annotations

from typing import Any

from ct_airflow_provider.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS

BUNDLE_NAME = "dags-folder"


def register_dag(dag: Any) -> None:
    """Serialize ``dag`` into the metadata database under the default bundle (Airflow 3.1 and later)."""
    if not AIRFLOW_V_3_1_PLUS:
        return
    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    else:
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef,attr-defined,unused-ignore]

    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE_NAME, None)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Register ``dag`` and run it with ``dag.test(**kwargs)``; returns the finished DagRun."""
    register_dag(dag)
    return dag.test(**kwargs)
