"""The smallest end-to-end check of the API: submit a run and read it back."""


def test_submit_and_get_a_run(client):
    response = client.post("/api/v1/runs", json={"dataset": "xor", "layers": [2, 4, 1]})
    assert response.status_code == 202
    run = response.get_json()
    assert run["status"] == "queued"
    again = client.get(f"/api/v1/runs/{run['id']}").get_json()
    assert again["spec"]["layers"] == [2, 4, 1]
