"""fde/scale_out.py: customer batches scored locally and as Ray tasks give the same frame (tiny sample, real fitted
hybrid).

final.py --engine ray goes through final.recommend_everyone(engine="ray"), whose batch function is
final.recommend_batch (importable by the workers).
"""
import pickle

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import final
from fde import candidates, scale_out
from fde import hybrid as blend
from fde.errors import UserError

score_one_batch = final.recommend_batch  # what final.py scores each batch with


@pytest.fixture(scope="module")
def fitted(tiny):
    """final.py's hybrid (its strategies and default weights), fitted on the tiny sample's transactions."""
    customers = pl.read_parquet(tiny.customers)
    articles = pl.read_parquet(tiny.articles)
    transactions = pl.read_parquet(tiny.transactions)
    populars, personal = candidates.make_sources(customers)
    hybrid = blend.make(populars, personal, {"purchase_history": 1.0, "co_purchase": 0.5, "popular_decayed": 0.25})
    hybrid.fit(transactions, articles)
    return hybrid, customers["customer_id"].sort()


@pytest.fixture(scope="module")
def ray_tasks(local_ray):
    """The session's local Ray, with this module shipped by value: workers import the repo's modules
    (final, fde) but not tests/, as a function defined in a script's __main__ would be shipped."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield local_ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_local_batches_equal_final_recommend_everyone(fitted, monkeypatch):
    hybrid, customers = fitted
    monkeypatch.setattr(scale_out, "connect_ray", lambda *a, **k: pytest.fail("the local engine started Ray"))
    local = scale_out.score_batches(hybrid, customers, score_one_batch, batch_size=128, show_progress=False)
    reference = final.recommend_everyone(hybrid, customers, show_progress=False, chunk=128)  # LOCAL_THREADS at once
    assert scale_out.LOCAL_THREADS > 1 and local.equals(reference)
    for threads in (1, 3):  # a sink gets the batches in the customers' order, however many run at once
        handed = []
        scale_out.score_batches(hybrid, customers, score_one_batch, batch_size=128, show_progress=False,
                                sink=handed.append, threads=threads)
        assert len(handed) == -(-customers.len() // 128) and pl.concat(handed).equals(local)
    assert local["customer_id"].n_unique() == customers.len() and local.height > 10 * customers.len()


@pytest.mark.parametrize("batch_size", [128, 1000])  # several batches (order matters), and one
def test_ray_tasks_give_the_local_frame(fitted, ray_tasks, batch_size):
    hybrid, customers = fitted
    local = scale_out.score_batches(hybrid, customers, score_one_batch, batch_size=batch_size, show_progress=False)
    on_ray = final.recommend_everyone(hybrid, customers, show_progress=False, chunk=batch_size, engine="ray")
    assert_frame_equal(on_ray, local)  # same rows, same order, same scores and reasons
    handed = []  # a sink (final.submit's) gets the same frames, batch by batch, in the customers' order
    assert final.recommend_everyone(hybrid, customers, show_progress=False, chunk=batch_size, engine="ray",
                                    sink=handed.append) is None
    assert len(handed) == -(-customers.len() // batch_size)
    assert_frame_equal(pl.concat(handed), local)


def test_model_goes_to_the_object_store_once(fitted, ray_tasks, monkeypatch):
    hybrid, customers = fitted
    puts = []
    real_put = ray_tasks.put

    def counting_put(value, *args, **kwargs):
        puts.append(type(value).__name__)
        return real_put(value, *args, **kwargs)

    monkeypatch.setattr(ray_tasks, "put", counting_put)
    scale_out.score_batches(hybrid, customers, score_one_batch, engine="ray", batch_size=100, show_progress=False)
    assert puts.count("Hybrid") == 1 and customers.len() > 3 * 100  # one put, several tasks
    assert len(pickle.dumps(hybrid)) > 10_000  # a real fitted model travelled, not a stub


def test_no_customers_and_bad_arguments(fitted):
    hybrid, customers = fitted
    empty = scale_out.score_batches(hybrid, customers.clear(), score_one_batch, show_progress=False)
    assert empty.height == 0 and empty.columns[:3] == ["customer_id", "article_id", "rank"]
    with pytest.raises(UserError, match="unknown engine"):
        scale_out.score_batches(hybrid, customers, score_one_batch, engine="spark")
    with pytest.raises(UserError, match="at least 1"):
        scale_out.score_batches(hybrid, customers, score_one_batch, batch_size=0)
    with pytest.raises(UserError, match="threads must be at least 1"):
        scale_out.score_batches(hybrid, customers, score_one_batch, threads=0)
