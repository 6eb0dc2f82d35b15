"""Small builders over grafana-foundation-sdk shared by the dashboards: the Prometheus data
source variable, queries, and the few panel shapes diurnal uses."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    FieldColorModeId,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")


def datasource_variable() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, query: str) -> db.QueryVariable:
    """A variable from ``label_values(...)``, refreshed when the time range changes."""
    return (db.QueryVariable(name).label(label).datasource(DS).query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))


def q(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, as_table: bool = False
      ) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if as_table:
        query = query.format(PromQueryFormat.TABLE)
    return query


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery, w: int = 12, h: int = 8
           ) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
             .span(w).height(h).line_width(1).fill_opacity(0)
             .legend(VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM)))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def band(title: str, description: str, unit: str, observed: str, mean: str, lower: str, upper: str,
         observed_legend: str = "observed", w: int = 24, h: int = 9) -> timeseries.Panel:
    """Observed against a band: the area between ``lower`` and ``upper`` is filled."""
    panel = series(title, description, unit,
                   q(observed, observed_legend, "A"), q(mean, "expected", "B"), q(lower, "lower", "C"),
                   q(upper, "upper", "D"), w=w, h=h)
    return (panel
            .override_by_name("upper", [DynamicConfigValue("custom.fillBelowTo", "lower"),
                                        DynamicConfigValue("custom.fillOpacity", 20),
                                        DynamicConfigValue("custom.lineWidth", 0),
                                        DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "green"})])
            .override_by_name("lower", [DynamicConfigValue("custom.lineWidth", 0),
                                        DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "green"})])
            .override_by_name("expected", [DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [6, 4]}),
                                           DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "green"})])
            .override_by_name(observed_legend, [DynamicConfigValue("custom.lineWidth", 2),
                                                DynamicConfigValue("color", {"mode": "fixed",
                                                                             "fixedColor": "blue"})]))


def single(title: str, description: str, unit: str, query: prometheus.Dataquery, w: int = 6, h: int = 4
           ) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(h)
            .with_target(query)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(common.BigValueGraphMode.NONE).color_mode(common.BigValueColorMode.VALUE)
            .justify_mode(common.BigValueJustifyMode.AUTO).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .wide_layout(True).show_percent_change(False)
            .percent_change_color_mode(common.PercentChangeColorMode.STANDARD)
            .orientation(common.VizOrientation.AUTO))


def hour_of_week_matrix(title: str, description: str, unit: str, expr: str, w: int = 12, h: int = 9
                        ) -> table.Panel:
    """A weekday x hour heatmap: a table of the 168 hour-of-week values, one row per weekday
    and one column per local hour, each cell coloured by its value."""
    hours = [f"{h:02d}" for h in range(24)]
    order = {"weekday\\hour": 0, **{hour: i + 1 for i, hour in enumerate(hours)}}
    return (table.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(h)
            .with_target(q(expr, instant=True, as_table=True))
            .with_transformation(DataTransformerConfig(id_val="groupingToMatrix", options={
                "columnField": "hour", "rowField": "weekday", "valueField": "Value", "emptyValue": "null"}))
            .with_transformation(DataTransformerConfig(id_val="organize", options={"indexByName": order}))
            .cell_options(common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC, apply_to_row=False))
            .color_scheme(db.FieldColor().mode(FieldColorModeId.CONTINUOUS_GR_YL_RD))
            .sort_by([TableSortByFieldState().display_name("weekday\\hour").desc(False)])
            .override_by_name("weekday\\hour", [DynamicConfigValue("custom.cellOptions", {"type": "auto"}),
                                                 DynamicConfigValue("displayName", "weekday")]))
