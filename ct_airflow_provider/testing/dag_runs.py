"""Run a DAG defined in a test (not in a DAG bundle folder) with ``dag.test()``.

From Airflow 3.1 on, ``dag.test()`` looks the DAG up in the metadata database, where only DAGs parsed
from a bundle folder are written. A DAG built inside a test function is registered first, the way the
DAG processor would register it, then run for real. Airflow 3.0 writes the DAG itself; Airflow 2.11
writes only the run, so its DAG row is written here.
"""

from __future__ import annotations

from typing import Any

from ct_airflow_provider.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS

BUNDLE_NAME = "dags-folder"


def register_dag(dag: Any) -> None:
    """Serialize ``dag`` into the metadata database under the default bundle (Airflow 3.1 and later)."""
    if not AIRFLOW_V_3_0_PLUS:
        # Airflow 2's dag.test() runs the DAG without writing its DagModel, which other DAGs look up.
        dag.sync_to_db()
        return
    if not AIRFLOW_V_3_1_PLUS:
        return
    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    else:
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef,attr-defined,unused-ignore]

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.utils.session import create_session

    with create_session() as session:
        # Committed first: the DAG row refers to its bundle's row.
        DagBundlesManager().sync_bundles_to_db(session=session)  # type: ignore[no-untyped-call,unused-ignore]
    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE_NAME, None)


def dag_bag(dag_folder: str) -> Any:
    """A ``DagBag`` of the DAG files in ``dag_folder``, parsed as the DAG processor parses them."""
    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined,unused-ignore]
    return DagBag(dag_folder=dag_folder, collect_dags=True)


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` with Airflow 3's argument names (``logical_date``) on every version."""
    if not AIRFLOW_V_3_0_PLUS and "logical_date" in kwargs:
        kwargs["execution_date"] = kwargs.pop("logical_date")
    return dag.test(**kwargs)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Register ``dag`` and run it with ``dag.test(**kwargs)``; returns the finished DagRun."""
    register_dag(dag)
    return dag_test(dag, **kwargs)
