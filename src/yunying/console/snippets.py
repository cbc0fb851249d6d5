"""SDK set-up snippets for a project: the two values to change (host and write key) filled in,
for the native API and every SDK docs/sdks.md says Yunying accepts."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Snippet:
    """One SDK's set-up code (``doc`` is the page under docs/ with all details)."""

    key: str
    title: str
    language: str
    code: str
    doc: str


def snippets(base_url: str, write_key: str, project: str) -> list[Snippet]:
    """Set-up code for each supported SDK, pointed at ``base_url`` with ``write_key``."""
    host = base_url.rstrip("/")
    bare = host.split("://", 1)[-1]
    sa_url = f"{host}/sa?project={quote(project)}&token={write_key}"
    plain_http = host.startswith("http://")
    mixpanel = (
        f'mp = Mixpanel("{write_key}", consumer=Consumer(\n'
        f'    events_url="{host}/track", people_url="{host}/engage",\n'
        f'    import_url="{host}/import", groups_url="{host}/groups"))'
        if plain_http
        else f'mp = Mixpanel("{write_key}", consumer=Consumer(api_host="{bare}"))'
    )
    return [
        Snippet("native", "HTTP (curl)", "bash",
                f"curl -X POST {host}/v1/events \\\n"
                f"  -H 'Authorization: Bearer {write_key}' \\\n"
                "  -H 'Content-Type: application/json' \\\n"
                "  -d '{\"event\": \"sign_up\", \"distinct_id\": \"u-1001\", "
                "\"properties\": {\"channel\": \"douyin\"}}'",
                "docs/ingestion.md"),
        Snippet("posthog-python", "PostHog (Python)", "python",
                f'from posthog import Posthog\n\nposthog = Posthog("{write_key}", host="{host}")',
                "docs/sdks/posthog.md"),
        Snippet("posthog-js", "PostHog (posthog-js)", "javascript",
                f"posthog.init('{write_key}', {{ api_host: '{host}', "
                "disable_session_recording: true })",
                "docs/sdks/posthog.md"),
        Snippet("segment", "Segment (Python)", "python",
                "import segment.analytics as analytics\n\n"
                f'analytics.write_key = "{write_key}"\nanalytics.host = "{host}"',
                "docs/sdks/segment.md"),
        Snippet("rudderstack", "RudderStack (Python)", "python",
                "import rudderstack.analytics as rudder_analytics\n\n"
                f'rudder_analytics.write_key = "{write_key}"\n'
                f'rudder_analytics.dataPlaneUrl = "{host}"',
                "docs/sdks/segment.md"),
        Snippet("mixpanel", "Mixpanel (Python)", "python",
                f"from mixpanel import Consumer, Mixpanel\n\n{mixpanel}",
                "docs/sdks/mixpanel.md"),
        Snippet("amplitude", "Amplitude (Python)", "python",
                "from amplitude import Amplitude, Config\n\n"
                f'client = Amplitude("{write_key}", Config(server_url="{host}/2/httpapi"))',
                "docs/sdks/amplitude.md"),
        Snippet("amplitude-browser", "Amplitude (browser)", "javascript",
                f'amplitude.init("{write_key}", {{ serverUrl: "{host}/2/httpapi" }})',
                "docs/sdks/amplitude.md"),
        Snippet("sensors", "Sensors Data 神策 (Python)", "python",
                "import sensorsanalytics\n\n"
                f'SA_SERVER_URL = "{sa_url}"\n'
                "sa = sensorsanalytics.SensorsAnalytics(sensorsanalytics.BatchConsumer(SA_SERVER_URL))",
                "docs/sdks/sensors.md"),
        Snippet("sensors-js", "Sensors Data 神策 (Web JS)", "javascript",
                f"sensors.init({{ server_url: '{sa_url}' }});",
                "docs/sdks/sensors.md"),
    ]  # fmt: skip
