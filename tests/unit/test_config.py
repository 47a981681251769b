"""Configuration: defaults, validation with one-line errors naming variable and value, secrets."""

import pytest
from conftest import run_cli

from chroma_backup.errors import ConfigError
from chroma_backup.settings import load_settings


def test_defaults_follow_the_documented_values():
    s = load_settings({}, env_file=None)
    assert (s.db_name, s.db_user, s.db_port, s.backup_table) == ("chroma_backup", "postgres", 5432, "chroma_data")
    assert (s.chromadb_host, s.chromadb_port, s.chromadb_use_ssl) == ("localhost", 8000, False)
    assert s.collections == ("*",) and s.all_collections
    assert s.new_collection_name == "{name}_restored"
    assert s.embedded_postgres


def test_collection_name_takes_a_comma_separated_list():
    s = load_settings({"CHROMA_COLLECTION_NAME": "docs, faq ,docs"}, env_file=None)
    assert s.collections == ("docs", "faq")


def test_new_collection_name_expands_name():
    s = load_settings({"NEW_COLLECTION_NAME": "{name}-recovered"}, env_file=None)
    assert s.target_name("docs") == "docs-recovered"


def test_database_url_disables_the_embedded_server():
    s = load_settings({"DATABASE_URL": "postgresql://u:p@h:5433/d"}, env_file=None)
    assert not s.embedded_postgres


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("CHROMADB_PORT", "abc", "CHROMADB_PORT: expected an integer between 1 and 65535, got 'abc'"),
        ("DB_PORT", "70000", "DB_PORT: expected an integer between 1 and 65535, got '70000'"),
        (
            "CHROMADB_USE_SSL",
            "maybe",
            "CHROMADB_USE_SSL: expected true or false (also yes/no, on/off, 1/0), got 'maybe'",
        ),
        (
            "BACKUP_TABLE",
            "data; DROP TABLE x",
            "BACKUP_TABLE: expected a plain lower-case identifier (letters, digits, _; "
            "at most 48 characters, not starting with a digit), got 'data; DROP TABLE x'",
        ),
        ("RETENTION_DAYS", "-1", "RETENTION_DAYS: expected a number >= 0, got '-1'"),
        ("RETENTION_MIN_SNAPSHOTS", "0", "RETENTION_MIN_SNAPSHOTS: expected an integer >= 1, got '0'"),
        ("BATCH_SIZE", "-5", "BATCH_SIZE: expected an integer >= 0, got '-5'"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'chatty'"),
        (
            "DB_SSLMODE",
            "always",
            "DB_SSLMODE: expected one of disable, allow, prefer, require, verify-ca, verify-full, got 'always'",
        ),
        ("EXPORT_INTERVAL_MINUTES", "0", "EXPORT_INTERVAL_MINUTES: expected a number > 0, got '0'"),
        ("HEALTH_MIN_RECORD_RATIO", "1.5", "HEALTH_MIN_RECORD_RATIO: expected a number >= 0 and <= 1, got '1.5'"),
    ],
)
def test_bad_value_names_variable_and_value(variable, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value}, env_file=None)
    assert str(info.value) == message


def test_bad_collection_list_is_rejected():
    with pytest.raises(ConfigError, match=r"^CHROMA_COLLECTION_NAME: expected a name, a comma-separated list"):
        load_settings({"CHROMA_COLLECTION_NAME": "a,,b"}, env_file=None)


def test_collection_name_with_quotes_is_rejected():
    with pytest.raises(
        ConfigError, match=r"^CHROMA_COLLECTION_NAME: expected a Chroma collection name .* got \"x'; drop\"$"
    ):
        load_settings({"CHROMA_COLLECTION_NAME": "x'; drop"}, env_file=None)


def test_bad_database_url_message_hides_the_password():
    with pytest.raises(ConfigError) as info:
        load_settings({"DATABASE_URL": "mysql://user:s3cret@host/db"}, env_file=None)
    assert "s3cret" not in str(info.value)
    assert str(info.value).startswith("DATABASE_URL: expected postgresql://")


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("CHROMADB_PORT=9001\nBACKUP_TABLE=from_file\n")
    s = load_settings({"CHROMADB_PORT": "9002"}, env_file=str(env_file))
    assert s.chromadb_port == 9002 and s.backup_table == "from_file"


def test_cli_bad_configuration_exits_2_with_one_line(tmp_path):
    result = run_cli(["snapshots"], {"CHROMADB_PORT": "abc"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: CHROMADB_PORT: expected an integer between 1 and 65535, got 'abc'\n"
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_bad_dotenv_value_exits_2(tmp_path):
    (tmp_path / ".env").write_text("CHROMADB_USE_SSL=sometimes\n")
    result = run_cli(["snapshots"], {}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: CHROMADB_USE_SSL: expected true or false (also yes/no, on/off, 1/0), got 'sometimes'\n"
    )


def test_password_never_appears_when_postgres_is_unreachable(tmp_path):
    port = __import__("conftest").free_port()
    env = {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),
        "DB_PASSWORD": "hunter2-secret",
        "RETRY_MAX_ATTEMPTS": "1",
        "LOG_LEVEL": "DEBUG",
    }
    result = run_cli(["snapshots"], env, cwd=tmp_path)
    assert result.returncode == 1
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: PostgreSQL unavailable during connect:")
