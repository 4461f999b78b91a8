"""Training from a real PostgreSQL server (tests/postgres.py): the same rows read from a table and
from a file give byte-identical models; the manifest records the query, row count, data hash and
time window but never a password; credentials come from the environment or a file only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from predictors.bundle import read_manifest
from training.__main__ import main as train
from training.data import data_hash, load_table
from training.synthetic import generate

from .postgres import START, Postgres, find_postgres_bin, load_into

ROWS = 3000


@pytest.fixture(scope="module")
def pg():
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL not found (/usr/lib/postgresql/*/bin): run `make tools` (Debian's postgresql)",
                    pytrace=False)
    server = Postgres(bindir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auto_table(pg, config, tmp_path_factory):
    """auto's synthetic rows in table auto_leads and, the same rows, in a CSV file."""
    vertical = config.vertical("auto")
    df = generate(vertical, seed=42, rows=ROWS)
    load_into(pg, "auto_leads", df, vertical)
    csv = tmp_path_factory.mktemp("file") / "auto.csv"
    df.to_csv(csv, index=False)
    return df, csv


@pytest.fixture
def pgpassword(pg, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg.password)
    monkeypatch.delenv("INSURANCE_DATABASE_URL", raising=False)


def _bundle(out, name="auto"):
    return out / name / "1.0.0"


@pytest.mark.slow
def test_table_and_file_train_byte_identical_models(pg, auto_table, pgpassword, tmp_path):
    df, csv = auto_table
    assert train(["--vertical", "auto", "--data", str(csv), "--out", str(tmp_path / "file")]) == 0
    assert train(["--vertical", "auto", "--data", pg.url(), "--table", "auto_leads", "--time-column", "quoted_at",
                  "--chunk-rows", "700", "--out", str(tmp_path / "db")]) == 0
    from_file, from_db = _bundle(tmp_path / "file"), _bundle(tmp_path / "db")
    assert (from_file / "model.txt").read_bytes() == (from_db / "model.txt").read_bytes()
    mf, md = read_manifest(from_file), read_manifest(from_db)
    assert mf["files"] == md["files"]
    assert md["training"]["data_sha256"] == mf["training"]["data_sha256"] == data_hash(load_table(csv, _v(md)))
    db = md["training"]["database"]
    assert db["rows"] == ROWS and db["table"] == "auto_leads" and db["chunk_rows"] == 700
    assert db["query"].startswith('SELECT "age"') and db["query"].endswith('FROM "auto_leads" ORDER BY "row_id"')
    assert db["time_window"]["first"] == START.isoformat()
    assert db["time_window"]["last"] == (START + timedelta(hours=ROWS - 1)).isoformat()
    assert md["training"]["data_source"] == f"postgresql+psycopg://trainer@127.0.0.1:{pg.port}/insurance"
    assert pg.password not in (from_db / "manifest.json").read_text()


@pytest.mark.slow
def test_claims_from_a_table_is_byte_identical_too(pg, config, pgpassword, tmp_path):
    """claims: text and categorical columns with gaps (NULL vs empty CSV cells), a skops model."""
    vertical = config.vertical("claims")
    df = generate(vertical, seed=3, rows=2000)
    load_into(pg, "claims_history", df, vertical)
    csv = tmp_path / "claims.csv"
    df.to_csv(csv, index=False)
    assert train(["--vertical", "claims", "--data", str(csv), "--out", str(tmp_path / "file")]) == 0
    assert train(["--vertical", "claims", "--data", pg.url(), "--table", "claims_history",
                  "--out", str(tmp_path / "db")]) == 0
    a, b = _bundle(tmp_path / "file", "claims"), _bundle(tmp_path / "db", "claims")
    assert (a / "model.skops").read_bytes() == (b / "model.skops").read_bytes()
    assert read_manifest(a)["training"]["data_sha256"] == read_manifest(b)["training"]["data_sha256"]


def _v(manifest):
    from predictors.spec import load_config

    return load_config().vertical(manifest["vertical"])


def test_password_on_the_command_line_is_refused(pg, tmp_path, capsys, pgpassword):
    code = train(["--vertical", "auto", "--data", pg.url(with_password=True), "--table", "auto_leads",
                  "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "refusing a password in the --data URL" in err and "PGPASSWORD" in err
    assert pg.password not in err and not (tmp_path / "auto").exists()


@pytest.mark.slow
def test_url_file_query_and_time_window(pg, auto_table, tmp_path, monkeypatch):
    """The whole URL (password included) from a file, a --query, and a window on quoted_at: the
    manifest records the resolved window and the rows it held."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url_file = tmp_path / "db-url"
    url_file.write_text(pg.url(with_password=True) + "\n")
    since, until = START + timedelta(hours=500), START + timedelta(hours=2500)
    assert train(["--vertical", "auto", "--data-url-file", str(url_file),
                  "--query", "SELECT * FROM auto_leads ORDER BY row_id", "--time-column", "quoted_at",
                  "--since", since.isoformat(), "--until", until.isoformat(),
                  "--out", str(tmp_path / "out")]) == 0
    m = read_manifest(_bundle(tmp_path / "out"))
    db = m["training"]["database"]
    assert db["rows"] == 2000 == m["training"]["rows"]
    assert db["params"] == {"since": since.isoformat(), "until": until.isoformat()}
    assert db["time_window"]["first"] == since.isoformat()
    assert db["time_window"]["last"] == (until - timedelta(hours=1)).isoformat()
    assert db["url_from"] == f"file {url_file}"
    assert pg.password not in (_bundle(tmp_path / "out") / "manifest.json").read_text()
    df, _ = auto_table
    assert m["training"]["data_sha256"] == data_hash(df.iloc[500:2500].reset_index(drop=True))


@pytest.mark.parametrize("args, env, words", [
    (["--table", "auto_leads"], {}, "no password supplied (credentials came from command line"),
    (["--table", "auto_leads"], {"PGPASSWORD": "wrong"}, "password authentication failed for user"),
    (["--table", "no_such_table"], {"PGPASSWORD": None}, "table 'no_such_table' does not exist"),
    (["--table", "home_leads"], {"PGPASSWORD": None}, "missing columns"),
    (["--table", "auto_nopk"], {"PGPASSWORD": None}, "has no primary key: pass --order-by"),
    (["--table", "auto_leads; DROP TABLE auto_leads"], {"PGPASSWORD": None}, "not a plain table or column name"),
    (["--query", "SELECT * FROM auto_leads WHERE false"], {"PGPASSWORD": None}, "returned no rows"),
    (["--table", "auto_leads"], {"PGPASSWORD": None}, "the driver 'postgresql+psycopg2' is not installed"),
    (["--table", "auto_leads", "--since", "30d"], {"PGPASSWORD": None}, "--since/--until need --time-column"),
    (["--table", "auto_leads", "--time-column", "quoted_at", "--since", "last week"], {"PGPASSWORD": None},
     "time 'last week': expected an ISO date/time"),
    (["--table", "auto_leads", "--order-by", "nope"], {"PGPASSWORD": None}, "no column 'nope'"),
])
def test_database_errors_are_clear(pg, auto_table, config, tmp_path, capsys, monkeypatch, args, env, words):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    for k, v in env.items():
        monkeypatch.setenv(k, pg.password if v is None else v)
    driver = "postgresql+psycopg2" if "psycopg2" in words else "postgresql"
    if "home_leads" in args:
        home = config.vertical("home")
        load_into(pg, "home_leads", generate(home, rows=10), home)
    if "auto_nopk" in args:
        load_into(pg, "auto_nopk", auto_table[0].head(10), config.vertical("auto"), primary_key=False)
    code = train(["--vertical", "auto", "--data", pg.url(driver=driver), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert not (tmp_path / "out" / "auto").exists()


def test_pgpassfile_and_env_url(pg, auto_table, tmp_path, monkeypatch):
    """libpq's password file (PGPASSFILE) and $INSURANCE_DATABASE_URL are the other two ways in."""
    from training.db import DatabaseSource, read_database, resolve_url

    monkeypatch.delenv("PGPASSWORD", raising=False)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg.port}:{pg.db}:{pg.user}:{pg.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    vertical = _v({"vertical": "auto"})
    df, rec = read_database(DatabaseSource(pg.url(), query="SELECT * FROM auto_leads ORDER BY row_id LIMIT 50"),
                            vertical)
    assert len(df) == 50 and rec["database"]["rows"] == 50 and rec["database"]["time_window"] is None
    url, origin = resolve_url(None, None, env={"INSURANCE_DATABASE_URL": pg.url(with_password=True)})
    assert url == pg.url(with_password=True) and origin == "$INSURANCE_DATABASE_URL"
    monkeypatch.delenv("PGPASSFILE")
    df2, _ = read_database(DatabaseSource(url, query="SELECT * FROM auto_leads ORDER BY row_id LIMIT 50"), vertical)
    assert data_hash(df2) == data_hash(df) == data_hash(auto_table[0].head(50))


def test_argument_combinations_are_checked(capsys):
    with pytest.raises(SystemExit) as e:
        train(["--vertical", "auto", "--data", "postgresql://u@h/db"])
    assert e.value.code == 2 and "needs --table TABLE or --query SQL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(["--vertical", "auto", "--data", "leads.csv", "--table", "t"])
    assert "is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(["--all", "--data", "postgresql://u@h/db", "--table", "t"])
    assert "need --vertical" in capsys.readouterr().err
