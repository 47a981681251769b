"""Backup, restore, verify and prune against a real Chroma server and a real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import make_collection

from chroma_backup.core import (
    export_collection_to_postgres,
    import_postgres_to_chroma,
    prune_snapshots,
    verify_collection,
)
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.retention import RetentionPolicy
from chroma_backup.errors import (
    ChromaUnavailable,
    CollectionBusy,
    CollectionExists,
    CollectionNotFound,
    SnapshotNotFound,
    VerificationFailed,
)
from chroma_backup.records import RecordBatch

TRICKY_IDS = [
    "plain",
    "ünïcödé-ид-身份",
    "quote'single",
    'quote"double',
    "semi;colon--",
    "back\\slash",
    "tab\there",
    "new\nline",
    "x'); DROP TABLE chroma_data; --",
    "%s %(name)s {}",
    " spaced ",
]


def tricky_records(dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(TRICKY_IDS)
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    embeddings[0, 0] = np.float32(1e-38)  # subnormal-adjacent and extreme values keep their bits
    embeddings[1, 1] = np.float32(-1.5e18)  # (cosine squares it: stay below float32 overflow)
    documents = [
        None,
        "",
        "ünïcode ✓ 🚀",
        'it\'s "quoted"',
        "line1\nline2\ttab\\back",
        "'; DROP TABLE x; --",
        None,
        "x" * 5000,
        "\\N",
        "%s",
        "plain",
    ]
    metadatas = [
        {"int": 7, "float": 7.0, "bool": True, "str": "seven"},
        {"big": 2**63 - 1, "small": -(2**63), "huge_float": 1e16, "tiny": 5e-324},
        {"ints": [1, 2, 3], "floats": [1.5, 2.0], "bools": [True, False], "strs": ["a", "b'c"]},
        None,
        {"sql": "'); DELETE FROM chroma_data; --", "json": '{"not": "an object"}'},
        {"unicode": "ключ ✓", "zero": 0, "negzero": 0.0, "false": False},
        {"only": "one"},
        None,
        {"nested_quotes": "\"'\"'"},
        {"f": 0.1},
        {"i": -1},
    ]
    uris = [None, "s3://bucket/a b.txt", None, "file:///tmp/ü", None, None, "http://x/?q='1'", None, None, "", None]
    return dict(ids=TRICKY_IDS, embeddings=embeddings, documents=documents, metadatas=metadatas, uris=uris)


def read_all(col):
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    order = np.argsort(got["ids"])
    return {
        got["ids"][i]: (
            np.asarray(got["embeddings"][i], dtype="<f4").tobytes(),
            got["documents"][i],
            got["metadatas"][i],
            got["uris"][i],
        )
        for i in order
    }


def assert_same_records(a: dict, b: dict, *, ulps: int = 0):
    assert sorted(a) == sorted(b)
    for rid in a:
        emb_a, doc_a, meta_a, uri_a = a[rid]
        emb_b, doc_b, meta_b, uri_b = b[rid]
        if ulps == 0:
            assert emb_a == emb_b, f"embedding of {rid!r} differs"
        else:
            diff = np.abs(np.frombuffer(emb_a, "<i4").astype(np.int64) - np.frombuffer(emb_b, "<i4").astype(np.int64))
            assert diff.max() <= ulps, f"embedding of {rid!r} differs by {diff.max()} ulp"
        assert doc_a == doc_b and type(doc_a) is type(doc_b), f"document of {rid!r}"
        assert meta_a == meta_b, f"metadata of {rid!r}"
        if meta_a:
            assert {k: type(v) for k, v in meta_a.items()} == {k: type(v) for k, v in meta_b.items()}
        assert uri_a == uri_b, f"uri of {rid!r}"


def hnsw_of(col):
    return col.configuration_json["hnsw"]


@pytest.mark.parametrize("space", ["ip", "l2", "cosine"])
def test_tricky_data_round_trips_exactly(stores, client, name, space):
    chroma, db = stores
    col = client.create_collection(
        name,
        embedding_function=None,
        metadata={"owner": "team ✓", "version": 3, "ratio": 0.5, "flag": True},
        configuration={"hnsw": {"space": space, "ef_construction": 123, "max_neighbors": 24, "ef_search": 77}},
    )
    col.add(**tricky_records(16))
    backup = export_collection_to_postgres(chroma, db, name)
    assert (backup.status, backup.records, backup.added) == ("complete", len(TRICKY_IDS), len(TRICKY_IDS))

    result = import_postgres_to_chroma(chroma, db, name, target=name + "-copy")
    assert result.verified and result.records == len(TRICKY_IDS)

    restored = client.get_collection(name + "-copy", embedding_function=None)
    # Chroma re-rounds vectors it stores in cosine space (1 ulp measured); elsewhere bit for bit.
    assert_same_records(read_all(col), read_all(restored), ulps=2 if space == "cosine" else 0)
    assert restored.metadata == col.metadata
    assert hnsw_of(restored) == hnsw_of(col)
    assert hnsw_of(restored)["space"] == space


def test_a_1536_dimension_collection_round_trips(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 300, dim=1536, space="ip")
    export_collection_to_postgres(chroma, db, name)
    import_postgres_to_chroma(chroma, db, name, target=name + "-copy")
    assert_same_records(
        read_all(client.get_collection(name, embedding_function=None)),
        read_all(client.get_collection(name + "-copy", embedding_function=None)),
    )
    assert db.catalog.list_snapshots("default_tenant", "default_database", name)[0].dimension == 1536


def test_an_empty_collection_backs_up_and_restores(stores, client, name):
    chroma, db = stores
    client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    backup = export_collection_to_postgres(chroma, db, name)
    assert backup.records == 0 and backup.status == "complete"
    result = import_postgres_to_chroma(chroma, db, name, target=name + "-copy")
    copy = client.get_collection(name + "-copy", embedding_function=None)
    assert result.verified and copy.count() == 0 and hnsw_of(copy)["space"] == "cosine"


def test_unchanged_collection_writes_no_record_versions(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 500)
    first = export_collection_to_postgres(chroma, db, name)
    second = export_collection_to_postgres(chroma, db, name)
    assert (second.added, second.updated, second.deleted, second.bytes_written) == (0, 0, 0, 0)
    assert second.digest == first.digest and second.records == 500
    assert version_count(db) == 500


def version_count(db) -> int:
    with db.transaction("test") as cur:
        cur.execute(db.tables.fmt("SELECT count(*) FROM {t}"))
        return cur.fetchone()[0]


def test_updates_adds_and_deletes_are_captured_incrementally(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 200)
    first = export_collection_to_postgres(chroma, db, name)
    col.update(ids=["r1", "r2"], metadatas=[{"changed": True}, {"changed": True}])
    col.delete(ids=["r3", "r4", "r5"])
    col.add(ids=["new1"], embeddings=[[0.5] * 8], documents=["new"])
    second = export_collection_to_postgres(chroma, db, name)
    assert (second.added, second.updated, second.deleted, second.records) == (1, 2, 3, 198)
    assert version_count(db) == 200 + 1 + 2  # only changed content was written again

    # point-in-time: the first snapshot still restores exactly as it was
    old = import_postgres_to_chroma(chroma, db, name, target=name + "-old", snapshot_id=first.snapshot_id)
    restored = client.get_collection(name + "-old", embedding_function=None)
    assert old.records == 200 and restored.count() == 200
    assert restored.get(ids=["r1"], include=["metadatas"])["metadatas"][0] == {"i": 1, "even": False, "score": 1 / 7}
    assert sorted(restored.get(ids=["r3", "r4", "r5", "new1"])["ids"]) == ["r3", "r4", "r5"]

    latest = import_postgres_to_chroma(chroma, db, name, target=name + "-new")
    assert latest.snapshot_id == second.snapshot_id and latest.records == 198
    assert verify_collection(chroma, db, name, target=name + "-new").identical


def test_restore_at_a_time_picks_the_newest_snapshot_finished_before_it(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 50)
    first = export_collection_to_postgres(chroma, db, name)
    between = datetime.now(timezone.utc)
    col.delete(ids=["r0"])
    export_collection_to_postgres(chroma, db, name)
    result = import_postgres_to_chroma(chroma, db, name, target=name + "-at", at=between)
    assert result.snapshot_id == first.snapshot_id and result.records == 50
    with pytest.raises(SnapshotNotFound, match=r"no complete snapshot of collection .* at or before"):
        import_postgres_to_chroma(
            chroma, db, name, target=name + "-early", at=datetime(2000, 1, 1, tzinfo=timezone.utc)
        )


def test_collection_over_the_unpaged_get_limit_backs_up_completely(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 35_500, dim=4)
    backup = export_collection_to_postgres(chroma, db, name)
    assert backup.records == 35_500
    verdict = verify_collection(chroma, db, name)
    assert verdict.identical and verdict.live_records == 35_500


def test_records_deleted_during_a_backup_never_hide_survivors(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 3000)
    doomed = [f"r{i}" for i in range(0, 3000, 2)]
    calls = []

    def delete_midway(n):  # runs after the first batch: the rest of the backup sees the deletes
        calls.append(n)
        if len(calls) == 1:
            col.delete(ids=doomed)

    backup = export_collection_to_postgres(chroma, db, name, run=RunOptions(batch_size=300, progress=delete_midway))
    survivors = set(col.get(include=[])["ids"])
    in_snapshot = set(
        db.records.record_digests(
            db.catalog.collection_ref("default_tenant", "default_database", name), backup.snapshot_id
        )
    )
    assert len(survivors) == 1500
    assert survivors <= in_snapshot


def test_restore_refuses_an_existing_target(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 20)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-busy", embedding_function=None)
    with pytest.raises(CollectionExists, match=r"target collection '.*-busy' already exists; pass --overwrite"):
        import_postgres_to_chroma(chroma, db, name, target=name + "-busy")
    assert client.get_collection(name + "-busy", embedding_function=None).count() == 0


def test_overwrite_replaces_the_target_only_after_verification(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 120)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["junk"], embeddings=[[1.0] * 8])
    result = import_postgres_to_chroma(chroma, db, name, target=name + "-t", overwrite=True)
    assert result.replaced and result.verified
    target = client.get_collection(name + "-t", embedding_function=None)
    assert target.count() == 120 and not target.get(ids=["junk"])["ids"]
    assert not [c for c in chroma.list_collection_names() if "-restoring-" in c]


class FailingAdds:
    """Wraps the real store and fails the second add: a fault Chroma cannot produce on demand."""

    def __init__(self, inner):
        self._inner = inner
        self.adds = 0

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def add(self, collection, batch):
        self.adds += 1
        if self.adds == 2:
            raise VerificationFailed("injected failure")
        return self._inner.add(collection, batch)


def test_a_failed_restore_leaves_no_half_filled_collection(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 400)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["keep"], embeddings=[[1.0] * 8])
    with pytest.raises(VerificationFailed, match="injected failure"):
        import_postgres_to_chroma(
            FailingAdds(chroma), db, name, target=name + "-t", overwrite=True, run=RunOptions(batch_size=100)
        )
    assert client.get_collection(name + "-t", embedding_function=None).get()["ids"] == ["keep"]
    assert not [c for c in chroma.list_collection_names() if c.startswith(name + "-t") and c != name + "-t"]
    restores = db.restores.list_restores(db.catalog.collection_ref("default_tenant", "default_database", name))
    assert restores[0]["status"] == "failed" and "injected failure" in restores[0]["error"]


def test_verify_reports_missing_extra_and_changed_ids(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 100)
    export_collection_to_postgres(chroma, db, name)
    col.delete(ids=["r1"])
    col.add(ids=["extra"], embeddings=[[0.1] * 8])
    col.update(ids=["r2"], metadatas=[{"edited": True}])
    verdict = verify_collection(chroma, db, name)
    assert not verdict.identical
    assert (verdict.missing, verdict.extra, verdict.changed) == (1, 1, 1)
    assert verdict.examples == {"missing": ["r1"], "extra": ["extra"], "changed": ["r2"]}


def test_backup_of_a_missing_collection_fails_without_a_snapshot(stores, name):
    chroma, db = stores
    with pytest.raises(CollectionNotFound):
        export_collection_to_postgres(chroma, db, name)
    assert db.catalog.list_snapshots("default_tenant", "default_database") == []


def test_a_second_backup_of_a_busy_collection_is_refused(stores, client, name, settings):
    from chroma_backup.postgres import Database

    chroma, db = stores
    make_collection(client, name, 10)
    other = Database(settings)
    with other.locks.collection_lock("default_tenant", "default_database", name):
        with pytest.raises(CollectionBusy, match=f"collection '{name}' is busy"):
            export_collection_to_postgres(chroma, db, name)
    other.close()
    assert export_collection_to_postgres(chroma, db, name).status == "complete"


def test_a_lock_on_one_collection_does_not_make_another_busy(stores, client, name, settings):
    from chroma_backup.postgres import Database

    chroma, db = stores
    make_collection(client, name, 10)
    other = Database(settings)
    try:
        with other.locks.collection_lock("default_tenant", "default_database", name + "-other"):
            assert export_collection_to_postgres(chroma, db, name).status == "complete"
    finally:
        other.close()


def test_prune_keeps_the_minimum_and_every_kept_snapshot_still_restores(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 100)
    snapshots = []
    for round_ in range(4):
        col.update(ids=[f"r{round_}"], metadatas=[{"round": round_}])
        col.delete(ids=[f"r{50 + round_}"])
        snapshots.append(export_collection_to_postgres(chroma, db, name))
    ref = db.catalog.collection_ref("default_tenant", "default_database", name)
    db.catalog.fail_snapshot(db.catalog.begin_snapshot(ref, health=None), "test failure")
    before = version_count(db)

    dry = prune_snapshots(
        db, tenant="default_tenant", database="default_database", policy=RetentionPolicy(0, 2), dry_run=True
    )
    assert version_count(db) == before
    [result] = prune_snapshots(db, tenant="default_tenant", database="default_database", policy=RetentionPolicy(0, 2))
    assert result.snapshots_deleted == [s.snapshot_id for s in snapshots[:2]]
    assert len(result.failed_runs_deleted) == 1
    assert result.versions_deleted == dry[0].versions_deleted > 0
    assert version_count(db) == before - result.versions_deleted
    remaining = [s.snapshot_id for s in db.catalog.list_snapshots("default_tenant", "default_database", name)]
    assert remaining == [snapshots[3].snapshot_id, snapshots[2].snapshot_id]
    for snap in snapshots[2:]:
        target = f"{name}-s{snap.snapshot_id}"
        assert import_postgres_to_chroma(chroma, db, name, target=target, snapshot_id=snap.snapshot_id).verified
        assert client.get_collection(target, embedding_function=None).count() == snap.records


def test_prune_keeps_recent_snapshots_and_recent_failed_runs(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 10)
    for _ in range(3):
        export_collection_to_postgres(chroma, db, name)
    ref = db.catalog.collection_ref("default_tenant", "default_database", name)
    db.catalog.fail_snapshot(db.catalog.begin_snapshot(ref, health=None), "test failure")
    [result] = prune_snapshots(db, tenant="default_tenant", database="default_database", policy=RetentionPolicy(30, 1))
    assert result.snapshots_deleted == [] and result.failed_runs_deleted == []
    statuses = [s.status for s in db.catalog.list_snapshots("default_tenant", "default_database", name)]
    assert statuses == ["failed", "complete", "complete", "complete"]


class CorruptingAdds(FailingAdds):
    """Writes one record with a changed document: the kind of silent damage verification exists for."""

    def add(self, collection, batch):
        if self.adds == 0 and len(batch):
            batch.documents[0] = "silently changed"
        self.adds += 1
        return self._inner.add(collection, batch)


def test_restore_verification_catches_a_silently_changed_record(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 300)
    export_collection_to_postgres(chroma, db, name)
    with pytest.raises(VerificationFailed, match=r"does not match snapshot \d+: missing=0 extra=0 changed=1"):
        import_postgres_to_chroma(CorruptingAdds(chroma), db, name, target=name + "-t", run=RunOptions(batch_size=100))
    assert name + "-t" not in chroma.list_collection_names()
    assert not [c for c in chroma.list_collection_names() if "-restoring-" in c]


class SkewedAdds(FailingAdds):
    """Drops one record of the first batch, or writes one record nobody asked for: the two ways a
    restore's record count can go wrong."""

    def __init__(self, inner, mode):
        super().__init__(inner)
        self.mode = mode

    def add(self, collection, batch):
        if self.adds == 0 and len(batch) > 1:
            if self.mode == "drop":
                batch = RecordBatch(
                    batch.ids[1:],
                    batch.embeddings[1:],
                    batch.documents[1:],
                    batch.metadatas[1:],
                    batch.uris[1:],
                    (batch.digests or [])[1:],
                )
            else:
                self._inner.add(collection, RecordBatch(["stowaway"], batch.embeddings[:1], [None], [None], [None]))
        self.adds += 1
        return self._inner.add(collection, batch)


@pytest.mark.parametrize(
    "mode, counts", [("drop", "missing=1 extra=0 changed=0"), ("stowaway", "missing=0 extra=1 changed=0")]
)
def test_restore_verification_catches_a_dropped_or_a_stowaway_record(stores, client, name, mode, counts):
    chroma, db = stores
    make_collection(client, name, 300)
    export_collection_to_postgres(chroma, db, name)
    with pytest.raises(VerificationFailed, match=rf"does not match snapshot \d+: {counts}$"):
        import_postgres_to_chroma(
            SkewedAdds(chroma, mode), db, name, target=name + "-t", run=RunOptions(batch_size=100)
        )
    assert name + "-t" not in chroma.list_collection_names()


def test_verify_counts_every_difference_and_names_the_first_few(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 600)
    export_collection_to_postgres(chroma, db, name)
    col.delete(ids=[f"r{i}" for i in range(100, 140)])
    col.add(ids=[f"new{i:03d}" for i in range(30)], embeddings=[[0.5] * 8] * 30)
    col.update(ids=[f"r{i}" for i in range(500, 520)], metadatas=[{"edited": True}] * 20)
    verdict = verify_collection(chroma, db, name, run=RunOptions(read_workers=2))
    assert (verdict.expected_records, verdict.live_records) == (600, 590)
    assert (verdict.missing, verdict.extra, verdict.changed) == (40, 30, 20)
    assert verdict.examples["missing"] == ["r100", "r101", "r102", "r103", "r104"]
    assert verdict.examples["extra"] == [f"new{i:03d}" for i in range(5)]
    assert verdict.examples["changed"] == [f"r{i}" for i in range(500, 505)]


def test_listing_a_collection_that_was_deleted_says_so(stores, client, name):
    chroma, _ = stores
    make_collection(client, name, 10)
    collection = chroma.open(name)
    client.delete_collection(name)
    with pytest.raises(CollectionNotFound, match=rf"listing ids of '{name}'"):
        chroma.list_ids(collection)


class ListingCutOff:
    """Chroma goes away in the middle of the id listing: a fault a real server cannot be made to
    produce on demand at that point."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def iter_ids(self, collection):
        pages = self._inner.iter_ids(collection)
        yield next(pages)
        raise ChromaUnavailable("Chroma unreachable during listing ids: connection reset")


def test_a_listing_cut_off_fails_the_run_as_chroma_unavailable_and_writes_nothing(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 1500)  # more than a small collection read whole: it is listed first
    with pytest.raises(ChromaUnavailable, match="connection reset"):
        export_collection_to_postgres(ListingCutOff(chroma), db, name)
    assert [(s.status, s.error) for s in db.catalog.list_snapshots("default_tenant", "default_database", name)] == [
        ("failed", "listing ids: ChromaUnavailable: Chroma unreachable during listing ids: connection reset")
    ]
    assert export_collection_to_postgres(chroma, db, name).records == 1500


class FailingSwap:
    """Wraps the real store and fails one step of an overwrite's swap: a fault Chroma cannot
    produce on demand.  ``step``: 'aside' (rename the old target away), 'into' (rename the verified
    copy into the target's name), 'delete' (delete the old one)."""

    def __init__(self, inner, step):
        self._inner = inner
        self.step = step
        self.renames = 0

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def rename(self, collection, new_name):
        from chroma_backup.errors import ChromaFailure

        self.renames += 1
        if self.step == "aside" and self.renames == 1:
            raise ChromaFailure(f"injected failure renaming to {new_name}")
        if self.step == "into" and "-restoring-" in collection.name:  # every try
            raise ChromaFailure(f"injected failure renaming to {new_name}")
        if self.step == "lost" and self.renames in (1, 2):  # done, but the answer is an error
            self._inner.rename(collection, new_name)
            raise ChromaFailure("injected: the answer was lost")
        return self._inner.rename(collection, new_name)

    def delete(self, name):
        if self.step == "delete" and "-replaced-" in name:
            from chroma_backup.errors import ChromaFailure

            raise ChromaFailure("injected failure deleting")
        return self._inner.delete(name)


def _ids(client, name):
    return sorted(client.get_collection(name, embedding_function=None).get()["ids"])


@pytest.mark.parametrize(
    "step,message",
    [
        (
            "aside",
            r"could not move the existing '.*-t' aside \(injected failure renaming to .*-t-replaced-\d+\); "
            r"'.*-t' is unchanged \(the old collection\)",
        ),
        (
            "into",
            r"could not rename the verified copy to '.*-t' \(injected failure renaming to .*-t\); "
            r"'.*-t' is the old collection again",
        ),
    ],
)
def test_a_failed_swap_step_leaves_the_old_collection_under_the_target_name(stores, client, name, step, message):
    from chroma_backup.errors import SwapFailed

    chroma, db = stores
    make_collection(client, name, 50)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["old"], embeddings=[[1.0] * 8])
    with pytest.raises(SwapFailed, match=message):
        import_postgres_to_chroma(FailingSwap(chroma, step), db, name, target=name + "-t", overwrite=True)
    assert _ids(client, name + "-t") == ["old"]
    assert [c for c in chroma.list_collection_names() if c.startswith(name + "-t")] == [name + "-t"]
    restores = db.restores.list_restores(db.catalog.collection_ref("default_tenant", "default_database", name))
    assert restores[0]["status"] == "failed"


def test_a_swap_whose_answers_are_lost_looks_and_completes(stores, client, name):
    """Both renames are done by the server but answer an error: the swap reads where things are
    and finishes; the restore is complete and says so."""
    chroma, db = stores
    make_collection(client, name, 50)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["old"], embeddings=[[1.0] * 8])
    result = import_postgres_to_chroma(FailingSwap(chroma, "lost"), db, name, target=name + "-t", overwrite=True)
    assert result.replaced and result.verified and result.replaced_kept is None
    assert len(_ids(client, name + "-t")) == 50
    assert [c for c in chroma.list_collection_names() if c.startswith(name + "-t")] == [name + "-t"]
    restores = db.restores.list_restores(db.catalog.collection_ref("default_tenant", "default_database", name))
    assert restores[0]["status"] == "complete"


def test_a_failed_delete_after_the_swap_leaves_the_new_collection_and_keeps_the_old(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 50)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["old"], embeddings=[[1.0] * 8])
    result = import_postgres_to_chroma(FailingSwap(chroma, "delete"), db, name, target=name + "-t", overwrite=True)
    assert result.replaced and result.verified
    assert result.replaced_kept == f"{name}-t-replaced-{result.restore_id}"
    assert len(_ids(client, name + "-t")) == 50
    assert _ids(client, result.replaced_kept) == ["old"]


def test_a_swap_that_cannot_even_move_the_old_one_back_names_both(stores, client, name):
    from chroma_backup.errors import SwapFailed

    class Stuck(FailingSwap):
        def rename(self, collection, new_name):
            self.renames += 1
            if self.renames >= 2:
                from chroma_backup.errors import ChromaFailure

                raise ChromaFailure("injected")
            return self._inner.rename(collection, new_name)

    chroma, db = stores
    make_collection(client, name, 50)
    export_collection_to_postgres(chroma, db, name)
    client.create_collection(name + "-t", embedding_function=None).add(ids=["old"], embeddings=[[1.0] * 8])
    with pytest.raises(
        SwapFailed,
        match=r"the old collection is '.*-t-replaced-\d+', the verified copy "
        r"'.*-t-restoring-\d+'; rename one of them to '.*-t'",
    ):
        import_postgres_to_chroma(Stuck(chroma, "x"), db, name, target=name + "-t", overwrite=True)
    names = chroma.list_collection_names()
    assert any(n.startswith(name + "-t-replaced-") for n in names)  # nothing was deleted
    assert any(n.startswith(name + "-t-restoring-") for n in names)


@pytest.mark.parametrize("workers", [1, 4])
def test_concurrent_readers_back_up_and_verify_exactly_what_one_reader_does(stores, client, name, workers):
    chroma, db = stores
    make_collection(client, name, 2600, dim=16)
    backup = export_collection_to_postgres(chroma, db, name, run=RunOptions(batch_size=100, read_workers=workers))
    expected = {f"r{i}" for i in range(2600)}
    ref = db.catalog.collection_ref("default_tenant", "default_database", name)
    assert set(db.records.record_digests(ref, backup.snapshot_id)) == expected
    again = export_collection_to_postgres(chroma, db, name, run=RunOptions(batch_size=100, read_workers=5 - workers))
    assert (again.digest, again.added, again.updated, again.deleted) == (backup.digest, 0, 0, 0)
    assert verify_collection(chroma, db, name, run=RunOptions(read_workers=workers)).identical
    result = import_postgres_to_chroma(chroma, db, name, target=name + "-copy", run=RunOptions(read_workers=workers))
    assert result.verified and result.records == 2600


def test_a_stop_during_a_concurrent_read_ends_the_backup_within_a_batch(stores, client, name):
    import threading

    from chroma_backup.errors import Interrupted

    chroma, db = stores
    make_collection(client, name, 3000, dim=8)
    stop = threading.Event()
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 3:
            stop.set()

    with pytest.raises(Interrupted):
        export_collection_to_postgres(
            chroma, db, name, run=RunOptions(batch_size=100, read_workers=3, progress=progress, stop=stop)
        )
    assert len(seen) == 3  # the next batch saw the stop
    assert [s.status for s in db.catalog.list_snapshots("default_tenant", "default_database", name)] == ["failed"]
