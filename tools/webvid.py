"""Reads a WebVid-format table (the published CSV, or a parquet with the same columns).

WebVid's ``results_*.csv`` has ``videoid, contentUrl, duration, page_dir, name``; ``duration``
is ISO-8601 (``PT00H00M17S``) in the published files and plain seconds in some re-exports.
Both become a float ``duration_s`` column; every input column is kept as it is.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tools.errors import InputError

__all__ = ["InputError", "read_table", "parse_duration", "read_webvid"]


# Read as text whatever they look like: ids are opaque keys (leading zeros matter) and
# captions such as "2020" must not become numbers (``caption``: a `vtp clean` output).
TEXT_COLUMNS = ("videoid", "page_dir", "name", "caption", "contentUrl", "duration")
ISO_DURATION = (r"^\s*P(?:(?P<d>\d+(?:\.\d+)?)D)?T?(?:(?P<h>\d+(?:\.\d+)?)H)?"
                r"(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?\s*$")


def read_table(path: Path) -> pa.Table:
    """Reads ``path`` (.csv or .parquet) with ``videoid`` and the other WebVid text columns as
    strings.

    Args:
        path: a WebVid CSV (optionally .gz, .bz2 or .zst compressed) or a parquet file.

    Raises:
        InputError: unknown extension or a file Arrow cannot parse.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    name = path.name.lower()
    # Arrow decompresses by extension
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst")):
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in TEXT_COLUMNS})
        # Alt text can hold quoted newlines.
        parse = pacsv.ParseOptions(newlines_in_values=True)
        try:
            return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"cannot parse {path} as CSV: {err}") from err
    if name.endswith(".parquet"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"cannot read {path} as parquet: {err}") from err
        for name in TEXT_COLUMNS:
            if name in table.column_names and table.schema.field(name).type != pa.string():
                index = table.column_names.index(name)
                table = table.set_column(index, name, table.column(name).cast(pa.string()))
        return table
    raise InputError(f"expected a .csv, .csv.gz or .parquet file, got {path.name!r}")


def parse_duration(values: pd.Series) -> pd.Series:
    """Seconds as floats from ISO-8601 durations (``PT00H00M17S``) or plain numbers.

    Unparseable or missing values become NaN, so the caller can count and report them.

    Args:
        values: durations as strings or numbers.
    """
    text = values.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    parts = text.str.extract(ISO_DURATION)
    scales = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    iso = sum(pd.to_numeric(parts[k], errors="coerce").fillna(0.0) * v for k, v in scales.items())
    # "PT" alone or an empty string matches the pattern with no parts: that is not a duration.
    matched = parts.notna().any(axis=1) & text.str.upper().str.startswith("P").fillna(False)
    iso = iso.where(matched)
    return numeric.astype("float64").fillna(iso).astype("float64")


def read_webvid(path: Path) -> pd.DataFrame:
    """The table at ``path`` as a DataFrame with a float ``duration_s`` column added.

    ``duration_s`` comes from ``duration`` when present, else an existing ``duration_s`` is
    kept, else it is all NaN.

    Args:
        path: a WebVid CSV or parquet.
    """
    frame = read_table(path).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    if "duration" in frame.columns:
        frame["duration_s"] = parse_duration(frame["duration"])
    elif "duration_s" not in frame.columns:
        frame["duration_s"] = float("nan")
    return frame
