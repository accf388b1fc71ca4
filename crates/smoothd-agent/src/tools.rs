//! The tools offered to the model (docs/agent-protocol.md) and their parsing into actions.

use serde_json::{Map, Value, json};

/// One action the model asked for, with arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Goto { url: String },
    Click { index: u32 },
    Type { index: u32, text: String, submit: bool },
    SelectOption { index: u32, option: String },
    Scroll { down: bool, pages: f64 },
    PressKey { key: String },
    GoBack,
    SwitchTab { tab: usize },
    UploadFile { index: u32, file: String },
    Wait { seconds: f64 },
    Done { output: Value, success: bool },
    Screenshot { full_page: bool },
    Hover { index: u32 },
    PrintPage,
    DragDrop { from: u32, to: u32 },
    Custom { name: String, input: Value },
}

/// A task's custom tool, as the client declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomTool {
    pub name: String,
    pub description: String,
    /// The client's `inputs`: a JSON schema, or a map of parameter name → schema.
    pub inputs: Value,
}

fn function(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }})
}

fn index(desc: &str) -> Value {
    json!({"type": "integer", "description": desc})
}

/// The tool list for one task: the built-in tools, the extra ones it enabled, its custom tools,
/// and `done` whose `output` takes `response_model` as its schema when there is one.
///
/// Long because it is a table: one schema per tool, read side by side with [`parse`].
pub fn definitions(
    additional: &[String],
    custom: &[CustomTool],
    response_model: Option<&Value>,
) -> Vec<Value> {
    let el = || index("element number [N] from the page view");
    let mut tools = vec![
        function(
            "goto",
            "Open a URL in the current tab.",
            json!({"url": {"type": "string"}}),
            &["url"],
        ),
        function("click", "Click an element.", json!({"index": el()}), &["index"]),
        function(
            "type",
            "Replace a field's text. Write <secret>NAME</secret> to type a secret.",
            json!({"index": el(), "text": {"type": "string"}, "submit": {"type": "boolean", "description": "press Enter after"}}),
            &["index", "text"],
        ),
        function(
            "select_option",
            "Choose an option of a select by its text.",
            json!({"index": el(), "option": {"type": "string"}}),
            &["index", "option"],
        ),
        function(
            "scroll",
            "Scroll the page.",
            json!({"direction": {"type": "string", "enum": ["down", "up"]}, "amount": {"type": "number", "description": "pages, default 1"}}),
            &["direction"],
        ),
        function(
            "press_key",
            "Press a key (Enter, Escape, Tab, ArrowDown...).",
            json!({"key": {"type": "string"}}),
            &["key"],
        ),
        function("go_back", "Go back to the previous page.", json!({}), &[]),
        function(
            "switch_tab",
            "Make another tab current.",
            json!({"tab": {"type": "integer"}}),
            &["tab"],
        ),
        function(
            "upload_file",
            "Attach one of the task's files to a file input.",
            json!({"index": el(), "file": {"type": "string", "description": "file name"}}),
            &["index", "file"],
        ),
        function(
            "wait",
            "Wait for the page.",
            json!({"seconds": {"type": "number"}}),
            &["seconds"],
        ),
    ];
    let output = match response_model {
        Some(schema) => schema.clone(),
        None => json!({"type": "string", "description": "the answer"}),
    };
    tools.push(function(
        "done",
        "Finish the task with the answer.",
        json!({"output": output, "success": {"type": "boolean"}}),
        &["output", "success"],
    ));
    for name in additional {
        tools.push(match name.as_str() {
            "screenshot" => function(
                "screenshot",
                "Take a screenshot (you see it next step; it is saved for the user).",
                json!({"full_page": {"type": "boolean"}}),
                &[],
            ),
            "hover" => function(
                "hover",
                "Move the mouse over an element.",
                json!({"index": el()}),
                &["index"],
            ),
            "print_page" => function(
                "print_page",
                "Save the page as a PDF for the user.",
                json!({}),
                &[],
            ),
            "drag_drop" => function(
                "drag_drop",
                "Drag an element onto another.",
                json!({"from": el(), "to": el()}),
                &["from", "to"],
            ),
            _ => continue,
        });
    }
    for t in custom {
        tools.push(json!({"type": "function", "function": {
            "name": t.name,
            "description": t.description,
            "parameters": custom_parameters(&t.inputs),
        }}));
    }
    tools
}

/// The client's `inputs` as a JSON-schema object: used as is when it already is one, else read
/// as a map of parameter name → schema (the SDK's documented form), all required.
fn custom_parameters(inputs: &Value) -> Value {
    match inputs {
        Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("object") => inputs.clone(),
        Value::Object(m) => {
            let props: Map<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    let schema = match v {
                        Value::Object(_) => v.clone(),
                        Value::String(t) => json!({"type": t}),
                        _ => json!({}),
                    };
                    (k.clone(), schema)
                })
                .collect();
            let required: Vec<&String> = m.keys().collect();
            json!({"type": "object", "properties": props, "required": required})
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

fn obj<'a>(args: &'a Value, tool: &str) -> Result<&'a Map<String, Value>, String> {
    args.as_object()
        .ok_or_else(|| format!("{tool}: the arguments must be a JSON object"))
}

fn get_index(a: &Map<String, Value>, key: &str, tool: &str) -> Result<u32, String> {
    let v = a.get(key).ok_or_else(|| format!("{tool}: `{key}` is required"))?;
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_matches(['[', ']']).parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => Ok(n as u32),
        _ => Err(format!("{tool}: `{key}` must be an element number, got {v}")),
    }
}

fn get_str(a: &Map<String, Value>, key: &str, tool: &str) -> Result<String, String> {
    match a.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(v) => Err(format!("{tool}: `{key}` must be a string, got {v}")),
        None => Err(format!("{tool}: `{key}` is required")),
    }
}

fn get_bool(a: &Map<String, Value>, key: &str) -> bool {
    match a.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn get_num(a: &Map<String, Value>, key: &str) -> Option<f64> {
    match a.get(key) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses one tool call. `offered` are the names in this request's tool list: a call to a tool
/// that was not offered is refused, so `additional_tools` cannot be bypassed.
///
/// Long because it is a table: one arm per tool, in the order of [`definitions`].
pub fn parse(
    name: &str,
    arguments: &str,
    offered: &[String],
    custom: &[CustomTool],
) -> Result<Action, String> {
    if !offered.iter().any(|n| n == name) {
        return Err(format!(
            "there is no tool {name:?}; the tools are: {}",
            offered.join(", ")
        ));
    }
    let args: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments)
            .map_err(|e| format!("{name}: the arguments are not valid JSON ({e}); send a JSON object"))?
    };
    if let Some(t) = custom.iter().find(|t| t.name == name) {
        return Ok(Action::Custom {
            name: t.name.clone(),
            input: args,
        });
    }
    let a = obj(&args, name)?;
    Ok(match name {
        "goto" => Action::Goto {
            url: get_str(a, "url", name)?,
        },
        "click" => Action::Click {
            index: get_index(a, "index", name)?,
        },
        "type" => Action::Type {
            index: get_index(a, "index", name)?,
            text: get_str(a, "text", name)?,
            submit: get_bool(a, "submit"),
        },
        "select_option" => Action::SelectOption {
            index: get_index(a, "index", name)?,
            option: get_str(a, "option", name)?,
        },
        "scroll" => {
            let dir = a.get("direction").and_then(Value::as_str).unwrap_or("down");
            let down = match dir.to_ascii_lowercase().as_str() {
                "down" => true,
                "up" => false,
                other => return Err(format!("scroll: direction must be down or up, got {other:?}")),
            };
            let pages = get_num(a, "amount").unwrap_or(1.0);
            // Someone sending pixels: turn them into pages.
            let pages = if pages > 20.0 { pages / 1000.0 } else { pages };
            Action::Scroll {
                down,
                pages: pages.clamp(0.1, 20.0),
            }
        }
        "press_key" => Action::PressKey {
            key: get_str(a, "key", name)?,
        },
        "go_back" => Action::GoBack,
        "switch_tab" => Action::SwitchTab {
            tab: get_index(a, "tab", name)? as usize,
        },
        "upload_file" => Action::UploadFile {
            index: get_index(a, "index", name)?,
            file: get_str(a, "file", name)?,
        },
        "wait" => Action::Wait {
            seconds: get_num(a, "seconds").unwrap_or(1.0).clamp(0.0, 10.0),
        },
        "done" => Action::Done {
            output: a.get("output").cloned().unwrap_or(Value::Null),
            success: a.get("success").is_none_or(|v| v.as_bool().unwrap_or(true)),
        },
        "screenshot" => Action::Screenshot {
            full_page: get_bool(a, "full_page"),
        },
        "hover" => Action::Hover {
            index: get_index(a, "index", name)?,
        },
        "print_page" => Action::PrintPage,
        "drag_drop" => Action::DragDrop {
            from: get_index(a, "from", name)?,
            to: get_index(a, "to", name)?,
        },
        other => return Err(format!("there is no tool {other:?}")),
    })
}

/// The names of the tools in a definition list.
pub fn names(defs: &[Value]) -> Vec<String> {
    defs.iter()
        .filter_map(|d| d.pointer("/function/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_tools_only_when_enabled() {
        let plain = names(&definitions(&[], &[], None));
        assert!(plain.contains(&"click".to_string()));
        assert!(!plain.contains(&"screenshot".to_string()));
        let extra = names(&definitions(&["screenshot".into(), "hover".into()], &[], None));
        assert!(extra.contains(&"screenshot".to_string()) && extra.contains(&"hover".to_string()));
        let err = parse("screenshot", "{}", &plain, &[]).unwrap_err();
        assert!(err.contains("no tool"), "{err}");
    }

    #[test]
    fn parses_arguments_tolerantly_and_reports_bad_ones() {
        let offered = names(&definitions(&[], &[], None));
        assert_eq!(
            parse("click", r#"{"index": "[4]"}"#, &offered, &[]),
            Ok(Action::Click { index: 4 })
        );
        assert_eq!(
            parse(
                "scroll",
                r#"{"direction": "down", "amount": 1080}"#,
                &offered,
                &[]
            ),
            Ok(Action::Scroll {
                down: true,
                pages: 1.08
            })
        );
        assert!(
            parse("click", "{index: 4", &offered, &[])
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse("click", r#"{"index": -1}"#, &offered, &[])
                .unwrap_err()
                .contains("element number")
        );
        assert!(
            parse("type", r#"{"index": 1}"#, &offered, &[])
                .unwrap_err()
                .contains("`text` is required")
        );
    }

    #[test]
    fn custom_tool_inputs_become_a_schema() {
        let t = CustomTool {
            name: "ask".into(),
            description: "Ask a human".into(),
            inputs: json!({"question": {"type": "string"}}),
        };
        let defs = definitions(&[], std::slice::from_ref(&t), None);
        let last = defs.last().unwrap();
        assert_eq!(
            last.pointer("/function/parameters/required/0"),
            Some(&json!("question"))
        );
        let offered = names(&defs);
        assert_eq!(
            parse("ask", r#"{"question": "why?"}"#, &offered, &[t]),
            Ok(Action::Custom {
                name: "ask".into(),
                input: json!({"question": "why?"})
            })
        );
    }
}
