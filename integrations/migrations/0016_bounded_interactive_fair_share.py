from importlib import import_module

from django.db import migrations

flows = import_module("integrations.migrations.0015_account_flows")

# rules.book_call in PL/pgSQL, now with fair share for bounded interactive calls (the proxy's):
# such a call takes its flow's next turn and is granted only while both its slot and its turn
# are within its bound; a flow turned away stays active until its caller asks again (see
# quota_stores/rules.py). 0015's function with that branch before its 'busy' check; the same
# arguments. Keep in step with rules.book_call and the Lua in quota_stores/redis.py: the store
# suite holds all three to the same answers.
_DECLARED = "    idle boolean; turn float8; active float8; v_outcome text;\n"
_BUSY = """    IF NOT p_background AND p_max_wait IS NOT NULL AND slot - v_now > p_max_wait THEN
"""
_BOUNDED_FAIR = """    IF NOT p_background AND p_max_wait IS NOT NULL AND p_account IS NOT NULL AND p_fair THEN
        SELECT COALESCE(SUM(o.w), 0) INTO others FROM (
            SELECT MAX(s.weight) AS w FROM integrations_accountlimiterstate s
            WHERE s.api_key_id = p_key AND s.active_until > v_now AND s.account_id <> p_account
            GROUP BY s.account_id
        ) o;
        clock := a.anchor_turn + GREATEST(0.0, v_now - a.anchor_at) * a.rate;
        v_rate := (p_weight / (1 + sib_active)) / (spacing * (p_weight + GREATEST(others, 0.0)));
        reach := clock + p_max_wait * v_rate;
        v_next := GREATEST(a.next_turn, clock);
        turn_due := v_next <= reach + tolerance OR k.next_slot_at + spacing <= v_now;
        IF NOT turn_due OR slot - v_now > p_max_wait THEN
            v_at := slot;
            IF NOT turn_due THEN
                v_at := GREATEST(slot, v_now + (v_next - clock) / v_rate);
            END IF;
            asking := v_now + GREATEST(1, ceil(v_at - v_now - p_max_wait)) + 1.0 / v_rate;
            IF asking > a.active_until + 1.0 / v_rate OR v_rate <> a.rate THEN
                INSERT INTO integrations_accountlimiterstate AS s (
                    api_key_id, account_id, token, active_until, anchor_at, anchor_turn, rate,
                    next_turn, weight, day, day_count, updated_at
                ) VALUES (
                    p_key, p_account, p_token, GREATEST(a.active_until, asking), v_now, clock,
                    v_rate, a.next_turn, p_weight, DATE '1970-01-01' + first_day, a_count,
                    statement_timestamp()
                )
                ON CONFLICT (api_key_id, account_id, token) DO UPDATE SET
                    active_until = excluded.active_until, anchor_at = excluded.anchor_at,
                    anchor_turn = excluded.anchor_turn, rate = excluded.rate,
                    weight = excluded.weight, day = excluded.day,
                    day_count = excluded.day_count, updated_at = excluded.updated_at;
            END IF;
            RETURN QUERY SELECT 'busy'::text, v_now, v_at, first_day, cnt, NULL::float8;
            RETURN;
        END IF;
        v_next := v_next + 1.0;
        UPDATE integrations_keylimiterstate SET
            next_slot_at = slot + spacing, day = DATE '1970-01-01' + first_day,
            day_count = cnt + 1, next_day_count = next_cnt + straddles::integer,
            updated_at = statement_timestamp()
        WHERE api_key_id = p_key;
        INSERT INTO integrations_accountlimiterstate AS s (
            api_key_id, account_id, token, active_until, anchor_at, anchor_turn, rate,
            next_turn, weight, day, day_count, updated_at
        ) VALUES (
            p_key, p_account, p_token,
            GREATEST(v_now + (v_next - clock) / v_rate, slot + 1.0 / v_rate, a.active_until),
            v_now, clock,
            v_rate, v_next, p_weight, DATE '1970-01-01' + first_day, a_count + 1,
            statement_timestamp()
        )
        ON CONFLICT (api_key_id, account_id, token) DO UPDATE SET
            active_until = excluded.active_until, anchor_at = excluded.anchor_at,
            anchor_turn = excluded.anchor_turn, rate = excluded.rate,
            next_turn = excluded.next_turn, weight = excluded.weight, day = excluded.day,
            day_count = excluded.day_count, updated_at = excluded.updated_at;
        RETURN QUERY SELECT 'granted'::text, v_now, slot, first_day, cnt + 1, NULL::float8;
        RETURN;
    END IF;
"""


def _derived(source: str) -> str:
    for anchor in (_DECLARED, _BUSY):
        if source.count(anchor) != 1:
            raise RuntimeError(f"0015's function changed: {anchor.strip()!r} is not there once")
    return source.replace(
        _DECLARED, _DECLARED + "    v_at float8; asking float8; turn_due boolean;\n"
    ).replace(_BUSY, _BOUNDED_FAIR + _BUSY)


BOOK_FUNCTION = _derived(flows.BOOK_FUNCTION)


def _on_postgresql(statement):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0015_account_flows"),
    ]

    operations = [
        migrations.RunPython(
            _on_postgresql(BOOK_FUNCTION), _on_postgresql(flows.BOOK_FUNCTION)
        ),
    ]
