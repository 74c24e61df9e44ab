"""tests/instances.py: each test instance starts empty and keeps what it records to itself."""

from dagster import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from tests.instances import fresh_instance


def test_each_instance_starts_empty_and_keeps_its_runs_to_itself(tmp_path):
    with fresh_instance(temp_dir=str(tmp_path / "a")) as a:
        create_run_for_test(a, job_name="train_model", status=DagsterRunStatus.SUCCESS)
        a.add_dynamic_partitions("batches", ["shop/web"])
        assert len(a.get_runs()) == 1
    with fresh_instance(temp_dir=str(tmp_path / "b")) as b, fresh_instance() as c:
        for instance in (b, c):
            assert instance.get_runs() == [] and instance.get_dynamic_partitions("batches") == []
        create_run_for_test(b, job_name="train_model")
        assert len(b.get_runs()) == 1 and c.get_runs() == []
    with fresh_instance(temp_dir=str(tmp_path / "a")) as a_again:  # an instance already there is opened, not replaced
        assert len(a_again.get_runs()) == 1 and a_again.get_dynamic_partitions("batches") == ["shop/web"]
