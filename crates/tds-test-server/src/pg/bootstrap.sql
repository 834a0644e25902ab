-- Run once in every database the PostgreSQL backend serves (idempotent). Everything the translated T-SQL
-- needs lives in schema "tds"; "dbo" exists like in every SQL Server database.
CREATE SCHEMA IF NOT EXISTS tds;
CREATE SCHEMA IF NOT EXISTS dbo;

-- SQL_Latin1_General_CP1_CI_AS-like: case-insensitive, accent-sensitive comparisons, keys and grouping.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
                   WHERE n.nspname = 'tds' AND c.collname = 'ci') THEN
        CREATE COLLATION tds.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = 'tds' AND t.typname = 'bit') THEN
        CREATE DOMAIN tds.bit AS smallint CHECK (VALUE IN (0, 1));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = 'tds' AND t.typname = 'tinyint') THEN
        CREATE DOMAIN tds.tinyint AS smallint CHECK (VALUE BETWEEN 0 AND 255);
    END IF;
END $$;

-- Synonyms: each one is a view (of a table or view) or a do-nothing procedure (of a procedure) plus a row
-- here (view_oid: that view's or procedure's oid), so OBJECT_ID(..., 'SN') finds it and
-- OBJECT_ID(..., 'V') / (..., 'P') do not (as on SQL Server).
CREATE TABLE IF NOT EXISTS tds.synonyms (
    schema_name text NOT NULL,
    name text NOT NULL,
    target text NOT NULL,
    view_oid oid NOT NULL,
    PRIMARY KEY (schema_name, name)
);

-- Stored procedures: a PostgreSQL procedure of that name that does nothing (so OBJECT_ID(..., 'P') and
-- sys.objects see it), and its T-SQL text here.
CREATE TABLE IF NOT EXISTS tds.procedures (
    schema_name text NOT NULL,
    name text NOT NULL,
    definition text NOT NULL,
    PRIMARY KEY (schema_name, name)
);

-- Identifier spellings as first written in DDL (PostgreSQL folds names to lower case): result columns
-- are reported with these.
CREATE TABLE IF NOT EXISTS tds.names (
    lname text PRIMARY KEY,
    name text NOT NULL
);

CREATE OR REPLACE FUNCTION tds.getutcdate() RETURNS timestamp LANGUAGE sql STABLE AS
$$ SELECT timezone('UTC', statement_timestamp())::timestamp $$;

CREATE OR REPLACE FUNCTION tds.scope_identity() RETURNS bigint LANGUAGE plpgsql VOLATILE AS
$$ BEGIN RETURN lastval(); EXCEPTION WHEN object_not_in_prerequisite_state THEN RETURN NULL; END $$;

CREATE OR REPLACE FUNCTION tds.len(s text) RETURNS integer LANGUAGE sql IMMUTABLE AS
$$ SELECT length(rtrim(s COLLATE "C")) $$;

CREATE OR REPLACE FUNCTION tds.charindex(needle text, haystack text, start_at integer DEFAULT 1)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN needle IS NULL OR haystack IS NULL THEN NULL
                WHEN strpos(lower(substr(haystack COLLATE "C", greatest(start_at, 1))), lower(needle COLLATE "C")) = 0 THEN 0
                ELSE strpos(lower(substr(haystack COLLATE "C", greatest(start_at, 1))), lower(needle COLLATE "C")) + greatest(start_at, 1) - 1
           END
$$;

-- SQL Server date parts, canonicalised.
CREATE OR REPLACE FUNCTION tds.datepart_name(part text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(part)
        WHEN 'year' THEN 'year' WHEN 'yy' THEN 'year' WHEN 'yyyy' THEN 'year'
        WHEN 'quarter' THEN 'quarter' WHEN 'qq' THEN 'quarter' WHEN 'q' THEN 'quarter'
        WHEN 'month' THEN 'month' WHEN 'mm' THEN 'month' WHEN 'm' THEN 'month'
        WHEN 'dayofyear' THEN 'dayofyear' WHEN 'dy' THEN 'dayofyear' WHEN 'y' THEN 'dayofyear'
        WHEN 'day' THEN 'day' WHEN 'dd' THEN 'day' WHEN 'd' THEN 'day'
        WHEN 'week' THEN 'week' WHEN 'wk' THEN 'week' WHEN 'ww' THEN 'week'
        WHEN 'weekday' THEN 'weekday' WHEN 'dw' THEN 'weekday' WHEN 'w' THEN 'weekday'
        WHEN 'hour' THEN 'hour' WHEN 'hh' THEN 'hour'
        WHEN 'minute' THEN 'minute' WHEN 'mi' THEN 'minute' WHEN 'n' THEN 'minute'
        WHEN 'second' THEN 'second' WHEN 'ss' THEN 'second' WHEN 's' THEN 'second'
        WHEN 'millisecond' THEN 'millisecond' WHEN 'ms' THEN 'millisecond'
        WHEN 'microsecond' THEN 'microsecond' WHEN 'mcs' THEN 'microsecond'
        WHEN 'nanosecond' THEN 'nanosecond' WHEN 'ns' THEN 'nanosecond'
    END
$$;

CREATE OR REPLACE FUNCTION tds.dateadd(part text, n double precision, d timestamp) RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE k bigint := trunc(n)::bigint;
BEGIN
    IF n IS NULL OR d IS NULL THEN RETURN NULL; END IF;
    CASE tds.datepart_name(part)
        WHEN 'year' THEN RETURN d + make_interval(years => k::int);
        WHEN 'quarter' THEN RETURN d + make_interval(months => (3 * k)::int);
        WHEN 'month' THEN RETURN d + make_interval(months => k::int);
        WHEN 'dayofyear', 'day', 'weekday' THEN RETURN d + make_interval(days => k::int);
        WHEN 'week' THEN RETURN d + make_interval(weeks => k::int);
        WHEN 'hour' THEN RETURN d + make_interval(hours => k::int);
        WHEN 'minute' THEN RETURN d + make_interval(mins => k::int);
        WHEN 'second' THEN RETURN d + make_interval(secs => k);
        WHEN 'millisecond' THEN RETURN d + make_interval(secs => k / 1000.0);
        WHEN 'microsecond' THEN RETURN d + make_interval(secs => k / 1000000.0);
        WHEN 'nanosecond' THEN RETURN d + make_interval(secs => round(k / 1000.0) / 1000000.0);
        ELSE RAISE EXCEPTION 'tds:155:''%'' is not a recognized dateadd option.', part;
    END CASE;
END $$;

CREATE OR REPLACE FUNCTION tds.dateadd(part text, n double precision, d timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT tds.dateadd(part, n, timezone('UTC', d)) AT TIME ZONE 'UTC' $$;

-- DATEDIFF counts the boundaries of `part` crossed from a to b, like SQL Server.
CREATE OR REPLACE FUNCTION tds.datediff_big(part text, a timestamp, b timestamp) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF a IS NULL OR b IS NULL THEN RETURN NULL; END IF;
    CASE tds.datepart_name(part)
        WHEN 'year' THEN RETURN extract(year FROM b)::bigint - extract(year FROM a)::bigint;
        WHEN 'quarter' THEN RETURN (extract(year FROM b)::bigint * 4 + extract(quarter FROM b)::bigint)
                                 - (extract(year FROM a)::bigint * 4 + extract(quarter FROM a)::bigint);
        WHEN 'month' THEN RETURN (extract(year FROM b)::bigint * 12 + extract(month FROM b)::bigint)
                               - (extract(year FROM a)::bigint * 12 + extract(month FROM a)::bigint);
        WHEN 'dayofyear', 'day', 'weekday' THEN RETURN (b::date - a::date)::bigint;
        WHEN 'week' THEN RETURN floor((b::date - date '1900-01-07') / 7.0)::bigint
                              - floor((a::date - date '1900-01-07') / 7.0)::bigint;
        WHEN 'hour' THEN RETURN ((extract(epoch FROM date_trunc('hour', b)) - extract(epoch FROM date_trunc('hour', a))) / 3600)::bigint;
        WHEN 'minute' THEN RETURN ((extract(epoch FROM date_trunc('minute', b)) - extract(epoch FROM date_trunc('minute', a))) / 60)::bigint;
        WHEN 'second' THEN RETURN (extract(epoch FROM date_trunc('second', b)) - extract(epoch FROM date_trunc('second', a)))::bigint;
        WHEN 'millisecond' THEN RETURN round((extract(epoch FROM date_trunc('milliseconds', b)) - extract(epoch FROM date_trunc('milliseconds', a))) * 1000)::bigint;
        WHEN 'microsecond' THEN RETURN round((extract(epoch FROM b) - extract(epoch FROM a)) * 1000000)::bigint;
        WHEN 'nanosecond' THEN RETURN round((extract(epoch FROM b) - extract(epoch FROM a)) * 1000000)::bigint * 1000;
        ELSE RAISE EXCEPTION 'tds:155:''%'' is not a recognized datediff option.', part;
    END CASE;
END $$;

CREATE OR REPLACE FUNCTION tds.datediff(part text, a timestamp, b timestamp) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE r bigint := tds.datediff_big(part, a, b);
BEGIN
    IF r > 2147483647 OR r < -2147483648 THEN
        RAISE EXCEPTION 'tds:535:The datediff function resulted in an overflow. The number of dateparts separating two date/time instances is too large. Try to use datediff with a less precise datepart.';
    END IF;
    RETURN r::integer;
END $$;

CREATE OR REPLACE FUNCTION tds.datepart(part text, d timestamp) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF d IS NULL THEN RETURN NULL; END IF;
    CASE tds.datepart_name(part)
        WHEN 'year' THEN RETURN extract(year FROM d);
        WHEN 'quarter' THEN RETURN extract(quarter FROM d);
        WHEN 'month' THEN RETURN extract(month FROM d);
        WHEN 'dayofyear' THEN RETURN extract(doy FROM d);
        WHEN 'day' THEN RETURN extract(day FROM d);
        WHEN 'week' THEN RETURN floor((extract(doy FROM d) - 1 + extract(dow FROM date_trunc('year', d))) / 7) + 1;
        WHEN 'weekday' THEN RETURN extract(dow FROM d) + 1;
        WHEN 'hour' THEN RETURN extract(hour FROM d);
        WHEN 'minute' THEN RETURN extract(minute FROM d);
        WHEN 'second' THEN RETURN floor(extract(second FROM d));
        WHEN 'millisecond' THEN RETURN floor(extract(milliseconds FROM d))::int % 1000;
        WHEN 'microsecond' THEN RETURN extract(microseconds FROM d)::int % 1000000;
        WHEN 'nanosecond' THEN RETURN (extract(microseconds FROM d)::int % 1000000) * 1000;
        ELSE RAISE EXCEPTION 'tds:155:''%'' is not a recognized datepart option.', part;
    END CASE;
END $$;

-- DATETIME keeps 1/300 s: .000, .003, .007 (the column is timestamp(3), which rounds the rest).
CREATE OR REPLACE FUNCTION tds.round_datetime(d timestamp) RETURNS timestamp LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc('second', d)
         + make_interval(secs => round(extract(microseconds FROM d - date_trunc('second', d))::numeric * 300 / 1000000) / 300.0)
$$;

-- '[schema].[name]', 'schema.name', 'name' → (schema, name), lower-cased like every name here.
CREATE OR REPLACE FUNCTION tds.split_name(p_name text, OUT schema_name text, OUT object_name text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE parts text[];
BEGIN
    parts := string_to_array(p_name, '.');
    object_name := lower(btrim(parts[array_length(parts, 1)], '[]" '));
    IF array_length(parts, 1) >= 2 AND btrim(parts[array_length(parts, 1) - 1], '[]" ') <> '' THEN
        schema_name := lower(btrim(parts[array_length(parts, 1) - 1], '[]" '));
    ELSE
        schema_name := 'dbo';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tds.object_id(p_name text, p_type text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s text; o text; r oid;
    t text := upper(btrim(coalesce(p_type, '')));
BEGIN
    IF p_name IS NULL THEN RETURN NULL; END IF;
    SELECT schema_name, object_name INTO s, o FROM tds.split_name(p_name);
    IF t IN ('', 'SN') THEN
        SELECT y.view_oid INTO r FROM tds.synonyms y WHERE y.schema_name = s AND y.name = o;
        IF r IS NOT NULL OR t = 'SN' THEN RETURN (r::bigint & 2147483647)::integer; END IF;
    END IF;
    IF t IN ('', 'U', 'V') THEN
        SELECT c.oid INTO r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = s AND c.relname = o
          AND ((t IN ('', 'U') AND c.relkind IN ('r', 'p'))
               OR (t IN ('', 'V') AND c.relkind IN ('v', 'm')
                   AND NOT EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = c.oid)));
        IF r IS NOT NULL OR t IN ('U', 'V') THEN RETURN (r::bigint & 2147483647)::integer; END IF;
    END IF;
    IF t IN ('', 'P', 'FN', 'IF', 'TF') THEN
        SELECT p.oid INTO r FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = s AND p.proname = o
          AND NOT EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = p.oid)
          AND (t = '' OR (t = 'P' AND p.prokind = 'p') OR (t <> 'P' AND p.prokind = 'f'))
        LIMIT 1;
        IF r IS NOT NULL OR t <> '' THEN RETURN (r::bigint & 2147483647)::integer; END IF;
    END IF;
    SELECT c.oid INTO r FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = s AND c.conname = o
      AND (t = '' OR (t = 'PK' AND c.contype = 'p') OR (t = 'UQ' AND c.contype = 'u')
           OR (t = 'F' AND c.contype = 'f') OR (t = 'C' AND c.contype = 'c'))
    LIMIT 1;
    RETURN (r::bigint & 2147483647)::integer;
END $$;

-- COL_LENGTH(table, column): the column's defined length in bytes (NULL when the table or column
-- does not exist), enough for the `IF COL_LENGTH(...) IS NULL ALTER TABLE ... ADD ...` guards.
CREATE OR REPLACE FUNCTION tds.col_length(p_table text, p_column text) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s text; o text; r integer;
BEGIN
    IF p_table IS NULL OR p_column IS NULL THEN RETURN NULL; END IF;
    SELECT schema_name, object_name INTO s, o FROM tds.split_name(p_table);
    SELECT CASE WHEN a.atttypmod > 4 THEN a.atttypmod - 4 ELSE greatest(a.attlen::integer, -1) END INTO r
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = s AND c.relname = o AND a.attname = lower(btrim(p_column, '[]" '))
      AND a.attnum > 0 AND NOT a.attisdropped;
    RETURN r;
END $$;

-- INDEXPROPERTY(object_id, index, property): 1 when an index of that name exists (any property),
-- NULL otherwise; enough for `IF INDEXPROPERTY(...) IS NULL CREATE INDEX ...` guards.
CREATE OR REPLACE FUNCTION tds.indexproperty(p_object integer, p_index text, p_property text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT 1 FROM pg_class c
    WHERE c.relkind = 'i' AND c.relname = lower(btrim(p_index, '[]" '))
      AND (p_object IS NULL OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = c.oid
           AND (i.indrelid::bigint & 2147483647)::integer = p_object))
    LIMIT 1
$$;

CREATE OR REPLACE FUNCTION tds.schema_id(p_name text DEFAULT 'dbo') RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT (oid::bigint & 2147483647)::integer FROM pg_namespace WHERE nspname = lower(btrim(p_name, '[]" '))
$$;

CREATE OR REPLACE FUNCTION tds.object_name(p_id integer) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT n.name FROM tds.names n WHERE n.lname = c.relname), c.relname::text)
    FROM pg_class c WHERE (c.oid::bigint & 2147483647)::integer = p_id
$$;

-- SUM keeps SQL Server's result types: int for int and smallint (overflow → 8115), bigint for bigint.
CREATE OR REPLACE AGGREGATE tds.sum(integer) (sfunc = int4pl, stype = integer);
CREATE OR REPLACE FUNCTION tds.sum_smallint(acc integer, v smallint) RETURNS integer LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v::integer ELSE acc + v END $$;
CREATE OR REPLACE AGGREGATE tds.sum(smallint) (sfunc = tds.sum_smallint, stype = integer);
CREATE OR REPLACE AGGREGATE tds.sum(bigint) (sfunc = int8pl, stype = bigint);
CREATE OR REPLACE AGGREGATE tds.sum(double precision) (sfunc = float8pl, stype = double precision);
CREATE OR REPLACE AGGREGATE tds.sum(numeric) (sfunc = numeric_add, stype = numeric);

-- NVARCHAR text as SQL Server holds it (UTF-16LE), and back.
CREATE OR REPLACE FUNCTION tds.utf16le(s text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    out bytea := ''::bytea;
    cp integer; hi integer; lo integer;
BEGIN
    FOR i IN 1 .. char_length(s) LOOP
        cp := ascii(substr(s COLLATE "C", i, 1));
        IF cp >= 65536 THEN
            cp := cp - 65536;
            hi := 55296 + (cp >> 10);
            lo := 56320 + (cp & 1023);
            out := out || set_byte(set_byte('\x0000'::bytea, 0, hi & 255), 1, hi >> 8)
                       || set_byte(set_byte('\x0000'::bytea, 0, lo & 255), 1, lo >> 8);
        ELSE
            out := out || set_byte(set_byte('\x0000'::bytea, 0, cp & 255), 1, cp >> 8);
        END IF;
    END LOOP;
    RETURN out;
END $$;

CREATE OR REPLACE FUNCTION tds.utf16le_decode(b bytea) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    out text := '';
    i integer := 0;
    u integer; u2 integer;
BEGIN
    WHILE i + 1 < length(b) LOOP
        u := get_byte(b, i) + 256 * get_byte(b, i + 1);
        i := i + 2;
        IF u BETWEEN 55296 AND 56319 AND i + 1 < length(b) THEN
            u2 := get_byte(b, i) + 256 * get_byte(b, i + 1);
            i := i + 2;
            u := 65536 + ((u - 55296) << 10) + (u2 - 56320);
        END IF;
        IF u > 0 THEN
            out := out || chr(u);
        END IF;
    END LOOP;
    RETURN out;
END $$;

-- ENCRYPTBYPASSPHRASE / DECRYPTBYPASSPHRASE in SQL Server's version-2 layout (SQL Server 2017+):
-- 0x02000000, a 16-byte IV, then AES-256-CBC (PKCS#7) under SHA-256 of the passphrase (as NVARCHAR:
-- UTF-16LE) of: magic 0xBAADF00D (little-endian), 2 reserved bytes, the clear text's length (2 bytes,
-- little-endian), the clear text. Version 1 (0x01000000: 8-byte IV, triple DES under the first 16 bytes
-- of SHA-1) is decrypted too. A wrong passphrase gives NULL, like SQL Server. Needs pgcrypto.
DO $$ BEGIN
    CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA tds;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pgcrypto is not available: ENCRYPTBYPASSPHRASE/DECRYPTBYPASSPHRASE will fail';
END $$;

CREATE OR REPLACE FUNCTION tds.encryptbypassphrase(pass text, clear bytea) RETURNS bytea
LANGUAGE plpgsql VOLATILE AS $$
DECLARE iv bytea; inner_text bytea; n integer;
BEGIN
    IF pass IS NULL OR clear IS NULL THEN RETURN NULL; END IF;
    n := length(clear);
    IF n > 8000 THEN RETURN NULL; END IF;
    iv := tds.gen_random_bytes(16);
    inner_text := '\x0df0adba0000'::bytea
        || set_byte(set_byte('\x0000'::bytea, 0, n & 255), 1, n >> 8)
        || clear;
    RETURN '\x02000000'::bytea || iv
        || tds.encrypt_iv(inner_text, tds.digest(tds.utf16le(pass), 'sha256'), iv, 'aes-cbc/pad:pkcs');
END $$;

CREATE OR REPLACE FUNCTION tds.encryptbypassphrase(pass text, clear text) RETURNS bytea
LANGUAGE sql VOLATILE AS $$ SELECT tds.encryptbypassphrase(pass, tds.utf16le(clear)) $$;

CREATE OR REPLACE FUNCTION tds.decryptbypassphrase(pass text, data bytea) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
DECLARE plain bytea; n integer; version bytea;
BEGIN
    IF pass IS NULL OR data IS NULL OR length(data) < 20 THEN RETURN NULL; END IF;
    version := substring(data FROM 1 FOR 4);
    BEGIN
        IF version = '\x02000000'::bytea THEN
            plain := tds.decrypt_iv(substring(data FROM 21), tds.digest(tds.utf16le(pass), 'sha256'),
                                    substring(data FROM 5 FOR 16), 'aes-cbc/pad:pkcs');
        ELSIF version = '\x01000000'::bytea THEN
            plain := tds.decrypt_iv(substring(data FROM 13),
                                    substring(tds.digest(tds.utf16le(pass), 'sha1') FROM 1 FOR 16)
                                        || substring(tds.digest(tds.utf16le(pass), 'sha1') FROM 1 FOR 8),
                                    substring(data FROM 5 FOR 8), '3des-cbc/pad:pkcs');
        ELSE
            RETURN NULL;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    IF length(plain) < 8 OR substring(plain FROM 1 FOR 4) <> '\x0df0adba'::bytea THEN RETURN NULL; END IF;
    n := get_byte(plain, 6) + 256 * get_byte(plain, 7);
    RETURN substring(plain FROM 9 FOR n);
END $$;

-- The catalog views the deploy scripts and `procfwk db init` read, as on SQL Server: sys.schemas,
-- sys.objects (type 'U ' table, 'V ' view, 'SN' synonym, 'P ' procedure, 'FN' function; object_id as
-- OBJECT_ID returns it) and sys.synonyms (base_object_name bracketed: [schema].[name]).
CREATE SCHEMA IF NOT EXISTS sys;

CREATE OR REPLACE FUNCTION tds.spelling(lname text) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT coalesce((SELECT n.name FROM tds.names n WHERE n.lname = $1), $1) $$;

CREATE OR REPLACE VIEW sys.schemas AS
SELECT tds.spelling(n.nspname::text)::varchar(128) AS name,
       (n.oid::bigint & 2147483647)::integer AS schema_id
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'tds', 'sys', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%';

CREATE OR REPLACE VIEW sys.objects AS
SELECT (c.oid::bigint & 2147483647)::integer AS object_id,
       tds.spelling(c.relname::text)::varchar(128) AS name,
       (c.relnamespace::bigint & 2147483647)::integer AS schema_id,
       (CASE WHEN EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = c.oid) THEN 'SN'
             WHEN c.relkind IN ('r', 'p') THEN 'U' ELSE 'V' END)::char(2) AS type,
       (CASE WHEN EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = c.oid) THEN 'SYNONYM'
             WHEN c.relkind IN ('r', 'p') THEN 'USER_TABLE' ELSE 'VIEW' END)::varchar(60) AS type_desc
FROM pg_class c JOIN sys.schemas s ON s.schema_id = (c.relnamespace::bigint & 2147483647)::integer
WHERE c.relkind IN ('r', 'p', 'v', 'm')
UNION ALL
SELECT (p.oid::bigint & 2147483647)::integer,
       tds.spelling(p.proname::text)::varchar(128),
       (p.pronamespace::bigint & 2147483647)::integer,
       (CASE WHEN EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = p.oid) THEN 'SN'
             WHEN p.prokind = 'p' THEN 'P' ELSE 'FN' END)::char(2),
       (CASE WHEN EXISTS (SELECT 1 FROM tds.synonyms y WHERE y.view_oid = p.oid) THEN 'SYNONYM'
             WHEN p.prokind = 'p' THEN 'SQL_STORED_PROCEDURE' ELSE 'SQL_SCALAR_FUNCTION' END)::varchar(60)
FROM pg_proc p JOIN sys.schemas s ON s.schema_id = (p.pronamespace::bigint & 2147483647)::integer
WHERE p.prokind IN ('p', 'f');

CREATE OR REPLACE VIEW sys.synonyms AS
SELECT (y.view_oid::bigint & 2147483647)::integer AS object_id,
       tds.spelling(y.name)::varchar(128) AS name,
       (SELECT (n.oid::bigint & 2147483647)::integer FROM pg_namespace n WHERE n.nspname = y.schema_name) AS schema_id,
       ('[' || replace(y.target, '.', '].[') || ']')::varchar(1035) AS base_object_name
FROM tds.synonyms y;
